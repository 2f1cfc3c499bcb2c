"""Loss specs, and the frozen learned metric as a loss."""

from __future__ import annotations

import pytest
import torch

from se.losses import MultiResolutionSTFTLoss, build_loss, format_loss_spec, parse_loss_spec


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("metric:1,l1:1", [("metric", 1.0), ("l1", 1.0)]),
        ("mrstft:1, l1:0.5", [("mrstft", 1.0), ("l1", 0.5)]),
        ("L1", [("l1", 1.0)]),
        ("metric:2e-1", [("metric", 0.2)]),
    ],
)
def test_parse_valid_specs(spec, expected):
    assert parse_loss_spec(spec) == expected
    assert parse_loss_spec(format_loss_spec(expected)) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty loss spec"),
        ("l2:1", "unknown loss 'l2'"),
        ("l1:1,l1:2", "more than once"),
        ("l1:0", "finite number > 0"),
        ("l1:-1", "finite number > 0"),
        ("l1:nan", "finite number > 0"),
        ("l1:abc", "is not a number"),
        ("l1:1,", "empty term"),
    ],
)
def test_parse_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_loss_spec(spec)


def test_metric_needs_a_checkpoint():
    with pytest.raises(ValueError, match="no metric checkpoint"):
        build_loss("metric:1", sample_rate=16000)


def test_metric_loss_is_frozen_and_differentiable_wrt_the_estimate(metric_ckpt):
    loss = build_loss("metric:1,l1:0.5", sample_rate=16000, metric_checkpoint=metric_ckpt, device="cpu")
    loss.train()  # the trainer puts its loss modules in train mode: the metric must stay in eval
    metric = loss.losses["metric"].metric
    assert not metric.training and not any(p.requires_grad for p in metric.parameters())
    clean = torch.randn(2, 4000) * 0.1
    est = (clean + 0.05 * torch.randn(2, 4000)).requires_grad_(True)
    total, parts = loss(est, clean)
    total.backward()
    assert set(parts) == {"metric", "l1"} and parts["metric"] > 0
    assert total.item() == pytest.approx(parts["metric"] + 0.5 * parts["l1"], rel=1e-5)
    assert est.grad is not None and est.grad.abs().sum() > 0
    assert all(p.grad is None for p in metric.parameters())
    info = loss.metric_info
    assert info["trained_on"] == "simulated" and len(info["sha256"]) == 64
    # dropout off: the same input gives the same loss twice
    assert loss(est, clean)[1]["metric"] == pytest.approx(parts["metric"], rel=1e-6)


def test_mrstft_is_zero_for_identical_inputs_and_positive_otherwise():
    mr = MultiResolutionSTFTLoss()
    x = torch.randn(2, 8000) * 0.1
    assert mr(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert mr(x + 0.05 * torch.randn_like(x), x).item() > 0.05
