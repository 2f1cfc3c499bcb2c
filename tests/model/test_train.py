"""Training: overfitting a handful of pairs, resume, regimes, and DDP == one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import read_checkpoint
from model.data import pairs_from_triplets
from model.trainer import TrainConfig, Trainer, train
from tests.model.conftest import write_pair_set

REPO = Path(__file__).resolve().parents[2]
QUICK = dict(segment_s=0.25, progress=False, patience=0)


def test_overfits_a_handful_of_pairs(tmp_path):
    path, audio = write_pair_set(tmp_path, n_refs=2, snrs=(40.0, 30.0, 8.0, 2.0))
    pairs = pairs_from_triplets(path, audio)
    assert len(pairs) == 8
    cfg = TrainConfig(
        epochs=40, batch_size=8, lr=3e-3, val_fraction=0.0, augment=False, model={"dropout": 0.0}, **QUICK
    )
    summary = train(pairs, tmp_path / "run", cfg, trained_on="simulated")
    losses = [h["train_bce"] for h in summary["history"]]
    assert losses[-1] < 0.05 < losses[0], losses[::5]


def test_one_epoch_end_to_end_then_resume(pair_set, tmp_path):
    path, audio = pair_set
    pairs = pairs_from_triplets(path, audio)
    out = tmp_path / "run"
    first = train(pairs, out, TrainConfig(epochs=1, batch_size=4, seed=3, **QUICK), trained_on="simulated")
    assert len(first["history"]) == 1
    for name in ("last.pt", "best.pt", "history.json", "training_curve.png"):
        assert (out / name).is_file(), name
    best = read_checkpoint(out / "best.pt")
    assert "trainer_state" not in best and best["trained_on"] == "simulated" and best["seed"] == 3
    history = json.loads((out / "history.json").read_text())
    assert {"train_bce", "val_bce", "val_roc_auc", "val_accuracy"} <= set(history["epochs"][0])
    assert "simulated" in history["perceptual_validity"]
    second = train(pairs, out, TrainConfig(epochs=2, batch_size=4, seed=3, **QUICK), trained_on="simulated")
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]  # resumed, not retrained


def test_linear_regime_trains_only_weights_and_head(pair_set, tmp_path):
    path, audio = pair_set
    pairs = pairs_from_triplets(path, audio)
    train(pairs, tmp_path / "a", TrainConfig(epochs=1, batch_size=8, **QUICK))
    init = tmp_path / "a" / "best.pt"
    trainer = Trainer(
        pairs,
        tmp_path / "b",
        TrainConfig(regime="linear", init_checkpoint=str(init), epochs=1, batch_size=8, lr=1e-2, **QUICK),
    )
    trainer.run()
    before, after = read_checkpoint(init)["state_dict"], read_checkpoint(tmp_path / "b" / "last.pt")["state_dict"]
    for key in before:
        changed = not torch.equal(before[key], after[key])
        assert changed == (key.startswith("raw_weights") or key.startswith("head_")), key


def test_pretrained_regime_runs_the_pretext_task(pair_set, tmp_path):
    path, audio = pair_set
    cfg = TrainConfig(
        regime="pretrained",
        epochs=1,
        batch_size=8,
        pretext_epochs=1,
        pretext_clips=16,
        pretext_families=("noise", "lowpass"),
        **QUICK,
    )
    summary = train(pairs_from_triplets(path, audio), tmp_path / "run", cfg)
    assert summary["history"][0]["pretext_classes"] == 6 and summary["history"][0]["pretext_clips"] == 16


def test_finetune_needs_a_checkpoint():
    with pytest.raises(ValueError, match="init"):
        TrainConfig(regime="finetune")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two torch processes start up: about 20 s on 2 cores
def test_two_process_gloo_ddp_matches_one_process(pair_set, tmp_path):
    """Same global batch (sharded permutation), no dropout, per-item augmentation seeds, SGD.

    The first epoch is one global batch, so its loss is computed before any update and must
    agree to float precision; the second epoch follows one identical update.
    """
    path, audio = pair_set
    args = [
        "--judgments",
        str(path),
        "--audio-root",
        str(audio),
        "--epochs",
        "2",
        "--batch-size",
        "12",
        "--segment-s",
        "0.25",
        "--dropout",
        "0",
        "--optimizer",
        "sgd",
        "--lr",
        "1e-3",
        "--val-fraction",
        "0.25",
        "--no-progress",
        "--patience",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # gloo, as named
    subprocess.run(
        [sys.executable, "-m", "model", "train", *args, "--out", str(tmp_path / "one")],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={_free_port()}",
            "-m",
            "model",
            "train",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    one = json.loads((tmp_path / "one" / "history.json").read_text())["epochs"]
    two = json.loads((tmp_path / "two" / "history.json").read_text())["epochs"]
    assert one[0]["train_bce"] == pytest.approx(two[0]["train_bce"], rel=1e-5)
    for a, b in zip(one, two):
        assert a["train_bce"] == pytest.approx(b["train_bce"], rel=1e-4)
        assert a["val_bce"] == pytest.approx(b["val_bce"], rel=1e-4)
        assert a["val_n"] == b["val_n"] == 4
