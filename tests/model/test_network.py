"""The distance's defining properties, on a randomly initialised network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.network import DPAMMetric
from perturbations.noises import colored_noise


def seeded_metric(seed: int = 0, **config) -> DPAMMetric:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DPAMMetric(**config)


def batch(seed: int, n: int = 3, samples: int = 4000) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, samples, generator=g)


@pytest.mark.parametrize("normalize_features", [False, True])
def test_identical_inputs_give_exactly_zero(normalize_features):
    metric = seeded_metric(normalize_features=normalize_features).eval()
    x = batch(1)
    assert torch.equal(metric(x, x), torch.zeros(3))
    assert metric(x[0], x[0]).item() == 0.0 and metric(x[0], x[0]).ndim == 0


def test_identical_inputs_give_zero_in_training_mode_with_dropout():
    metric = seeded_metric(dropout=0.5).train()
    metric.dropout_generator = torch.Generator().manual_seed(3)
    x = batch(2)
    assert torch.equal(metric(x, x), torch.zeros(3))
    y = x + 0.01 * batch(3)
    assert (metric(x, y) > 0).all()


@pytest.mark.parametrize("normalize_features", [False, True])
def test_symmetric_and_positive(normalize_features):
    metric = seeded_metric(normalize_features=normalize_features).eval()
    x, y = batch(4), batch(5)
    d_xy, d_yx = metric(x, y), metric(y, x)
    assert torch.equal(d_xy, d_yx)
    assert (d_xy > 0).all()


def test_distance_stays_non_negative_with_extreme_raw_weights():
    metric = seeded_metric().eval()
    with torch.no_grad():
        for raw in metric.raw_weights:
            raw.uniform_(-50.0, 5.0, generator=torch.Generator().manual_seed(6))
    assert all((w >= 0).all() for w in metric.layer_weights())
    assert (metric(batch(7), batch(8)) >= 0).all()


def test_batched_equals_one_by_one():
    metric = seeded_metric().eval()
    x, y = batch(9), batch(10)
    together = metric(x, y)
    alone = torch.stack([metric(x[i], y[i]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-7)


def test_gradient_reaches_both_inputs():
    metric = seeded_metric().eval()
    for p in metric.parameters():
        p.requires_grad_(False)
    x = batch(11).requires_grad_(True)
    y = (batch(11) + 0.05 * batch(12)).requires_grad_(True)
    metric(x, y).sum().backward()
    for t in (x, y):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_mean_distance_grows_with_noise_level(speech_16k):
    metric = seeded_metric(0).eval()
    ref = torch.from_numpy(speech_16k)
    rms = float(ref.pow(2).mean().sqrt())
    snrs_db = [40.0, 30.0, 20.0, 10.0, 0.0]
    means = []
    for snr in snrs_db:
        distances = []
        for draw in range(3):
            noise = colored_noise("pink", len(ref), np.random.default_rng([int(snr), draw]), sample_rate=16000)
            noisy = ref + torch.from_numpy(noise) * rms * 10 ** (-snr / 20)
            with torch.no_grad():
                distances.append(float(metric(ref, noisy)))
        means.append(np.mean(distances))
    assert all(a < b for a, b in zip(means, means[1:])), dict(zip(snrs_db, means))


def test_other_sample_rate_is_resampled():
    import torchaudio.functional as AF

    metric = seeded_metric().eval()
    x48, y48 = batch(13, 2, 12000), batch(14, 2, 12000)
    direct = metric(x48, y48, sample_rate=48000)
    manual = metric(AF.resample(x48, 48000, 16000), AF.resample(y48, 48000, 16000))
    torch.testing.assert_close(direct, manual)


def test_architecture_follows_dpam():
    metric = DPAMMetric()
    assert [c.out_channels for c in metric.convs] == [32] * 5 + [64] * 5 + [128] * 4
    assert [c.stride[0] for c in metric.convs] == [2] * 13 + [1]
    assert {c.kernel_size[0] for c in metric.convs} == {3}


@pytest.mark.parametrize("bad", [{"norm": "batch"}, {"dropout": 1.0}, {"n_layers": 0}, {"sample_rate": 0}])
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        DPAMMetric(**bad)


def test_bad_shapes_raise():
    metric = DPAMMetric().eval()
    with pytest.raises(ValueError):
        metric(torch.zeros(2, 100), torch.zeros(2, 101))
    with pytest.raises(ValueError):
        metric(torch.zeros(1, 1, 100), torch.zeros(1, 1, 100))
