"""Checkpoints rebuild the metric without training code, load safely, and carry their note."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from model import load_metric
from model.checkpoint import build_payload, read_checkpoint, save_checkpoint
from model.network import DPAMMetric

REPO = Path(__file__).resolve().parents[2]


def make_checkpoint(path, trained_on="simulated", **config) -> DPAMMetric:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        metric = DPAMMetric(**config)
        with torch.no_grad():  # weights that differ from any fresh init
            for raw in metric.raw_weights:
                raw.add_(torch.randn_like(raw))
    save_checkpoint(
        build_payload(
            metric, training_config={"regime": "scratch"}, seed=5, metrics={"val_bce": 0.5}, trained_on=trained_on
        ),
        path,
    )
    return metric.eval()


def test_round_trip_in_a_process_without_training_code(tmp_path):
    ckpt = tmp_path / "m.pt"
    metric = make_checkpoint(ckpt, normalize_features=True, dropout=0.2)
    g = torch.Generator().manual_seed(0)
    x, y = 0.1 * torch.randn(2, 3000, generator=g), 0.1 * torch.randn(2, 3000, generator=g)
    torch.save({"x": x, "y": y}, tmp_path / "io.pt")
    expected = metric(x, y)
    script = f"""
import sys, torch
from model.network import DPAMMetric
p = torch.load({str(ckpt)!r}, weights_only=True)
m = DPAMMetric(**p["model_config"]); m.load_state_dict(p["state_dict"]); m.eval()
io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=True)
torch.save(m(io["x"], io["y"]), {str(tmp_path / "out.pt")!r})
banned = [k for k in sys.modules if k in ("model.trainer", "model.data", "pandas", "perturbations")]
assert not banned, banned
"""
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt", weights_only=True), expected)


def test_payload_holds_everything_and_loads_with_weights_only(tmp_path):
    make_checkpoint(tmp_path / "m.pt")
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in (
        "model_config",
        "state_dict",
        "training_config",
        "seed",
        "code_version",
        "metrics",
        "trained_on",
        "perceptual_validity",
    ):
        assert key in payload
    assert payload["trained_on"] == "simulated" and "simulated" in payload["perceptual_validity"]
    assert not list(tmp_path.glob("*.part")), "the temporary file was left behind"


def test_load_metric_is_frozen_eval_and_differentiable_wrt_est(tmp_path):
    make_checkpoint(tmp_path / "m.pt")
    metric = load_metric(tmp_path / "m.pt", device="cpu")
    assert not metric.training and not any(p.requires_grad for p in metric.parameters())
    assert metric.trained_on == "simulated"
    g = torch.Generator().manual_seed(1)
    ref = 0.1 * torch.randn(3000, generator=g)
    est = (ref + 0.05 * torch.randn(3000, generator=g)).requires_grad_(True)
    d = metric(ref, est)
    assert d.ndim == 0 and d > 0
    d.backward()
    assert est.grad.abs().sum() > 0
    assert metric(ref, ref).item() == 0.0
    assert metric(ref, est.detach()).item() == metric(est.detach(), ref).item()


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    import pytest

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        read_checkpoint(bad)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a jndlab metric checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.pt")
