"""Fixtures for the enhancement tests: a tiny clean corpus, noise files and a tiny metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from perturbations.audio import save_audio
from perturbations.noises import colored_noise
from tests.conftest import tone

__all__ = ["SR", "TINY_NET", "tone"]

SR = 16000
TINY_NET = {"n_layers": 4, "channels": 8}  # receptive field 1 + 2·(1+2+4+8+1) = 33 samples


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    yield


@pytest.fixture
def clean_corpus(tmp_path):
    root = tmp_path / "clean"
    for i in range(6):
        save_audio(root / f"clip{i}.wav", tone(i, 0.6 + 0.1 * i), SR)
    return root


@pytest.fixture
def noise_dir(tmp_path):
    root = tmp_path / "noise"
    rng = np.random.default_rng(5)
    for color in ("white", "pink"):
        save_audio(root / f"{color}.wav", 0.1 * colored_noise(color, 2 * SR, rng, sample_rate=SR), SR)
    return root


@pytest.fixture(scope="session")
def metric_ckpt(tmp_path_factory):
    """A tiny randomly initialised DPAM metric, saved through the model package's API."""
    from model.checkpoint import build_payload, save_checkpoint
    from model.network import DPAMMetric

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        metric = DPAMMetric(n_layers=3, base_channels=4, dropout=0.1)
    path = tmp_path_factory.mktemp("metric") / "metric.pt"
    save_checkpoint(build_payload(metric, training_config={}, seed=0, metrics={}, trained_on="simulated"), path)
    return path


def _tiny_network(seed: int = 0, **overrides):
    from se.networks import build_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network("can", **{**TINY_NET, **overrides})


@pytest.fixture
def make_network():
    """``make_network(seed=0, **config)``: a tiny randomly initialised CAN."""
    return _tiny_network


@pytest.fixture
def make_checkpoint():
    """``make_checkpoint(path, seed=0, scale=1.0, **config)``: an enhancer checkpoint, untrained."""
    from se.checkpoint import build_payload, save_checkpoint

    def make(path, seed: int = 0, scale: float = 1.0, **overrides):
        net = _tiny_network(seed, **overrides)
        with torch.no_grad():
            net.output.weight.mul_(scale)
        save_checkpoint(
            build_payload(net, loss_spec="l1:1", metric=None, training_config={}, seed=seed, metrics={}), path
        )
        return path

    return make
