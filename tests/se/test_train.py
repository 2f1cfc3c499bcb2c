"""Training: a one-step smoke run with the learned metric, resume, paired folders, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from perturbations.audio import save_audio
from perturbations.manifest import sha256_file
from se.__main__ import COMMANDS, main
from se.checkpoint import read_checkpoint
from se.trainer import TrainConfig, Trainer, train

TINY = {
    "network_config": {"n_layers": 4, "channels": 8},
    "batch_size": 2,
    "segment_s": 0.25,
    "val_files": 2,
    "sample_files": 1,
    "heldout_max_s": 0.5,
    "progress": False,
}


def test_one_step_smoke_train_with_the_metric_and_l1(tmp_path, clean_corpus, noise_dir, metric_ckpt):
    out = tmp_path / "run"
    metric_before = {k: v.clone() for k, v in torch.load(metric_ckpt, weights_only=True)["state_dict"].items()}
    summary = train(
        TrainConfig(
            out=str(out),
            loss="metric:1,l1:1",
            metric_checkpoint=str(metric_ckpt),
            clean_dir=str(clean_corpus),
            noise_dir=str(noise_dir),
            steps=1,
            seed=7,
            **TINY,
        )
    )
    assert summary["steps"] == 1
    for name in ("last.pt", "best.pt", "history.json", "training_curve.png", "heldout/heldout.csv"):
        assert (out / name).is_file(), name
    assert list((out / "samples").glob("step0000001/*.wav")) and list((out / "samples").glob("step0000001/*.png"))
    ckpt = read_checkpoint(out / "best.pt")
    assert ckpt["loss_spec"] == "metric:1,l1:1" and ckpt["seed"] == 7 and ckpt["code_version"]
    assert ckpt["metric"]["sha256"] == sha256_file(metric_ckpt) and ckpt["metric"]["trained_on"] == "simulated"
    assert "trainer_state" not in ckpt and "trainer_state" in read_checkpoint(out / "last.pt")
    entry = json.loads((out / "history.json").read_text())["entries"][0]
    assert {"train_loss", "train_loss_metric", "train_loss_l1", "val_loss", "val_metric", "val_si_sdr_db"} <= set(entry)
    assert np.isfinite(entry["train_loss"])
    after = torch.load(metric_ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(metric_before[k], after[k]) for k in after)  # the metric file is untouched


def test_resume_continues_exactly(tmp_path, clean_corpus):
    common = dict(loss="l1:1", clean_dir=str(clean_corpus), steps=2, seed=1, **TINY)
    train(TrainConfig(out=str(tmp_path / "straight"), **common))
    train(TrainConfig(out=str(tmp_path / "split"), **{**common, "steps": 1}))
    resumed = train(TrainConfig(out=str(tmp_path / "split"), **common))
    assert [h["step"] for h in resumed["history"]] == [1, 2]
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "split" / "last.pt")["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    with pytest.raises(ValueError, match="use a fresh --out"):
        Trainer(TrainConfig(out=str(tmp_path / "split"), **{**common, "loss": "mrstft:1"})).run()


def test_paired_folders_train(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        clean = (0.1 * np.sin(np.arange(6000) * (0.05 + 0.01 * i))).astype(np.float32)
        save_audio(tmp_path / "clean_trainset_wav" / f"p{i}.wav", clean, 16000)
        save_audio(
            tmp_path / "noisy_trainset_wav" / f"p{i}.wav",
            clean + 0.02 * rng.standard_normal(6000).astype(np.float32),
            16000,
        )
    out = tmp_path / "run"
    summary = train(
        TrainConfig(
            out=str(out),
            loss="mrstft:1,l1:0.5",
            clean_dir=str(tmp_path / "clean_trainset_wav"),
            noisy_dir=str(tmp_path / "noisy_trainset_wav"),
            heldout_fraction=0.25,
            steps=1,
            **TINY,
        )
    )
    assert summary["steps"] == 1 and (out / "heldout_files.txt").read_text().count(".wav") == 1


def test_every_command_has_help(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([command.name, "--help"])
        assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert {c.name for c in COMMANDS} == {"train", "enhance", "evaluate", "make-heldout", "ab-test", "import-dpam"}
    assert "--tf-checkpoint" in out and "dpam-se" in out
    assert "python -m se ab-test" in out and "--simulate N" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(
        [
            "train",
            "--out",
            str(tmp_path / "r"),
            "--clean",
            str(tmp_path / "missing"),
            "--steps",
            "1",
            "--loss",
            "metric:1",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--metric CKPT" in err[0]
    code = main(["train", "--out", str(tmp_path / "r"), "--clean", str(tmp_path / "missing"), "--steps", "1"])
    assert code == 1 and "does not exist" in capsys.readouterr().err


def test_training_leaves_out_the_clips_of_a_separately_made_heldout_set(tmp_path, clean_corpus, capsys):
    # a held-out set from another split (fraction 0.5, seed 9) than the trainer's default (0.1, seed 0)
    held = tmp_path / "held"
    assert (
        main(
            [
                "make-heldout",
                "--clean",
                str(clean_corpus),
                "--out",
                str(held),
                "--fraction",
                "0.5",
                "--seed",
                "9",
                "--mixtures-per-clip",
                "2",
                "--max-s",
                "0.5",
            ]
        )
        == 0
    )
    assert "from 3 clean clip(s)" in capsys.readouterr().out
    trainer = Trainer(
        TrainConfig(
            out=str(tmp_path / "run"), loss="l1:1", clean_dir=str(clean_corpus), heldout_dir=str(held), steps=1, **TINY
        )
    )
    from se.data import heldout_clean_sources

    sources, _ = heldout_clean_sources(held)
    assert len(trainer.train_set) == 3 and not {p.resolve() for p in trainer.train_set.paths} & sources
    assert len(trainer.val_pairs) == 6


def test_cli_network_config(tmp_path, clean_corpus):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--out",
                str(out),
                "--clean",
                str(clean_corpus),
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--segment-s",
                "0.25",
                "--val-files",
                "1",
                "--no-progress",
                "--network-config",
                '{"n_layers": 3, "channels": 4}',
            ]
        )
        == 0
    )
    config = read_checkpoint(out / "last.pt")["network_config"]
    assert config["n_layers"] == 3 and config["channels"] == 4 and config["sample_rate"] == 16000
    with pytest.raises(SystemExit):
        main(["train", "--out", str(out), "--clean", str(clean_corpus), "--network-config", "[1]"])
