"""Fine-tuning from a checkpoint (the pipeline's start from dpam-se), and the 'worse than its input' flags
of se evaluate and the pipeline's summary page."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from se.__main__ import main
from se.checkpoint import build_payload, read_checkpoint, save_checkpoint
from se.data import NoiseSpec, split_clean_corpus, write_heldout
from se.evaluate import evaluate, worse_than_input, worse_warning
from se.networks import build_network

ROOT = Path(__file__).resolve().parents[2]


def _tiny_dpam(path, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network("dpam_can", n_layers=3, channels=4)
    save_checkpoint(build_payload(net, loss_spec="l1:1", metric=None, training_config={}, seed=seed, metrics={}), path)
    return path, net


def test_train_init_fine_tunes_the_given_network_on_whole_clips(tmp_path, clean_corpus, noise_dir):
    init, net = _tiny_dpam(tmp_path / "init.pt")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--init",
                str(init),
                "--clean",
                str(clean_corpus),
                "--noise-dir",
                str(noise_dir),
                "--out",
                str(out),
                "--steps",
                "2",
                "--batch-size",
                "1",
                "--segment-s",
                "0",
                "--lr",
                "1e-3",
                "--val-files",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["network"] == "dpam_can" and ckpt["network_config"] == net.config  # not the default CAN
    assert ckpt["training_config"]["init_checkpoint"] == str(init) and ckpt["training_config"]["segment_s"] is None
    before = net.state_dict()
    moved = [k for k, v in ckpt["state_dict"].items() if not torch.equal(v, before[k])]
    assert moved  # trained from the given weights, which it changed
    assert all(float((ckpt["state_dict"][k] - before[k]).abs().max()) < 0.1 for k in before)  # 2 small steps


def test_worse_than_input_follows_each_measures_direction():
    summary = {
        "pesq": {"better": "higher", "improvement_mean": -0.1},
        "stoi": {"better": "higher", "improvement_mean": 0.02},
        "metric": {"better": "lower", "improvement_mean": 0.3},
        "si_sdr_db": {"better": "higher", "improvement_mean": None},
    }
    assert worse_than_input(summary) == ["pesq", "metric"]
    assert "PESQ" in worse_warning(["pesq"], 3) and worse_warning([], 3) == ""


@pytest.fixture
def heldout(tmp_path, clean_corpus):
    _, held, ids = split_clean_corpus(clean_corpus, 0.34, seed=0)
    write_heldout(held, ids, tmp_path / "heldout", NoiseSpec((0.0, 5.0)), 16000, seed=0)
    return tmp_path / "heldout"


def test_evaluate_flags_a_system_that_makes_audio_worse(tmp_path, heldout, make_checkpoint, capsys):
    # an untrained network whose output is ~1e3 x too quiet
    ckpt = make_checkpoint(tmp_path / "quiet.pt", scale=1e-3)
    result = evaluate(ckpt, heldout, tmp_path / "eval", workers=0, progress=False, device="cpu")
    assert "si_sdr_db" in result["worse_than_input"]  # an untrained network distorts the waveform
    assert "WORSE THAN ITS INPUT" in (tmp_path / "eval" / "summary.md").read_text()
    assert (
        json.loads((tmp_path / "eval" / "summary.json").read_text())["worse_than_input"] == result["worse_than_input"]
    )
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(heldout),
                "--workers",
                "0",
                "--out",
                str(tmp_path / "eval2"),
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "warning: WORSE THAN ITS INPUT" in capsys.readouterr().err


def _page_module():
    spec = importlib.util.spec_from_file_location("pipeline_page", ROOT / "scripts" / "pipeline_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_page_flags_worse_systems(tmp_path):
    def write(folder, change_stoi):
        def entry(noisy, change, better):
            return {
                "noisy": {"mean": noisy},
                "enhanced": {"mean": noisy + change},
                "improvement_mean": change,
                "better": better,
            }

        summary = {"stoi": entry(0.8, change_stoi, "higher"), "metric": entry(1.0, -0.1, "lower")}
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "summary.json").write_text(json.dumps({"files": 3, "summary": summary}))

    write("se/evaluation", -0.16)  # no worse_than_input key (older summaries): computed by the page
    write("se/evaluation_published", 0.05)
    page = _page_module().build(tmp_path, tmp_path / "timings.tsv", None).read_text()
    fine_tuned, published = page.split("published dpam-se")
    assert "WORSE THAN ITS INPUT</strong> on STOI" in fine_tuned
    assert "WORSE THAN ITS INPUT" not in published and "Not worse than its input" in published
    assert np.isclose(0.64, 0.8 - 0.16) and "0.640" in fine_tuned


def test_rounding_is_not_worse():
    # an identity network moves PESQ by ~1e-6: not an effect, so not flagged
    summary = {
        "pesq": {"better": "higher", "improvement_mean": -2e-6},
        "si_sdr_db": {"better": "higher", "improvement_mean": -5e-5},
        "stoi": {"better": "higher", "improvement_mean": -0.002},
    }
    assert worse_than_input(summary) == ["stoi"]
