"""The context aggregation network: size, receptive field, dilation done right, registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from se.checkpoint import build_payload, read_checkpoint, rebuild, save_checkpoint
from se.networks import NETWORKS, build_network, count_parameters, register


def test_default_size_and_receptive_field():
    net = build_network("can")
    # 192 + 13·12288 conv weights, 14·130 adaptive-BN parameters, 65 in the 1×1 output
    assert count_parameters(net) == 161_821
    assert net.receptive_field == 16_385  # 1 + 2·(1 + 2 + 4 + ... + 4096 + 1)
    assert net.receptive_field / 16000 == pytest.approx(1.024, abs=1e-3)
    assert len(net.convs) == 14 and net.dilations[:3] == (1, 2, 4) and net.dilations[-2:] == (4096, 1)


def test_initial_output_does_not_vanish_through_the_stack():
    # Glorot init (DPAM's TF-slim default): PyTorch's default left the output at ~1e-6 of the input
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network("can")
    x = 0.1 * torch.randn(2, 4000)
    with torch.no_grad():
        ratio = float(net(x).std() / x.std())
    assert 1e-4 < ratio < 1.0
    assert all(
        float(c.weight.detach().std()) == pytest.approx((2 / (3 * (c.in_channels + c.out_channels))) ** 0.5, rel=0.1)
        for c in net.convs[1:]
    )


def test_shapes_and_batch_independence_in_eval(make_network):
    net = make_network().eval()
    x = torch.randn(2, 300)
    y = net(x)
    assert y.shape == x.shape and net(x[0]).shape == (300,)
    x2 = x.clone()
    x2[1] = torch.randn(300)
    assert torch.allclose(net(x2)[0], y[0], atol=1e-6)  # eval BN: items never mix


def test_gradient_support_is_exactly_the_receptive_field(make_network):
    net = make_network().eval()
    assert net.receptive_field == 33
    x = torch.randn(1, 200, requires_grad=True)
    t = 100
    net(x)[0, t].backward()
    support = torch.nonzero(x.grad[0]).flatten()
    half = net.receptive_field // 2
    assert support.min().item() == t - half and support.max().item() == t + half


def _polyphase_conv(x: torch.Tensor, weight: torch.Tensor, d: int) -> torch.Tensor:
    """Germain et al.'s signal_to_dilated -> undilated conv -> dilated_to_signal, axes done right."""
    batch, channels, time = x.shape
    phases = x.reshape(batch, channels, time // d, d).permute(0, 3, 1, 2).reshape(batch * d, channels, time // d)
    y = F.conv1d(phases, weight, padding=weight.shape[-1] // 2)
    return y.reshape(batch, d, -1, time // d).permute(0, 2, 3, 1).reshape(batch, -1, time)


def test_dilated_conv_matches_the_polyphase_construction(make_network):
    net = make_network(n_layers=5)
    conv = net.convs[3]  # dilation 8, channels -> channels
    assert conv.dilation == (8,)
    x = torch.randn(2, conv.in_channels, 64)
    with torch.no_grad():
        ours = conv(x)
        right = _polyphase_conv(x, conv.weight, 8)
        # the reshape-only version (no permute) mixes channels with time steps
        wrong = F.conv1d(x.reshape(2 * 8, conv.in_channels, 8), conv.weight, padding=1).reshape(2, -1, 64)
    assert torch.allclose(ours, right, atol=1e-5)
    assert not torch.allclose(ours, wrong, atol=1e-2)


def test_bad_config_and_unknown_name():
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        build_network("can", kernel_size=4)
    with pytest.raises(ValueError, match="unknown network 'nope'"):
        build_network("nope")


def test_a_second_architecture_registers_and_round_trips(tmp_path):
    @register
    class Gain(nn.Module):
        name = "test-gain"

        def __init__(self, sample_rate: int = 16000, gain: float = 0.5):
            super().__init__()
            self.config = {"sample_rate": sample_rate, "gain": gain}
            self.sample_rate = sample_rate
            self.scale = nn.Parameter(torch.tensor(gain))

        receptive_field = 1

        def forward(self, x):
            return self.scale * x

    try:
        net = build_network("test-gain", gain=0.25)
        path = save_checkpoint(
            build_payload(net, loss_spec="l1:1", metric=None, training_config={}, seed=0, metrics={}),
            tmp_path / "gain.pt",
        )
        again = rebuild(read_checkpoint(path))
        assert isinstance(again, Gain) and again.config == {"sample_rate": 16000, "gain": 0.25}
    finally:
        NETWORKS.pop("test-gain")


def test_residual_option_starts_near_the_identity_and_round_trips(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network("can", n_layers=4, channels=8, residual=True).eval()
    x = 0.1 * torch.randn(2, 500)
    with torch.no_grad():
        assert float((net(x) - x).std()) < 0.5 * float(x.std())  # starts near the input
        net.output.weight.zero_()
        net.output.bias.zero_()
        assert torch.equal(net(x), x) and torch.equal(net(x[0]), x[0])
    assert count_parameters(net) == count_parameters(build_network("can", n_layers=4, channels=8))
    save_checkpoint(
        build_payload(net, loss_spec="l1:1", metric=None, training_config={}, seed=0, metrics={}), tmp_path / "r.pt"
    )
    again = rebuild(read_checkpoint(tmp_path / "r.pt"))
    assert again.config["residual"] is True
    with torch.no_grad():
        assert torch.equal(again.eval()(x), x)


def test_dpam_se_network_is_the_can_with_dpam_switches():
    from se.checkpoint import load_enhancer
    from se.networks import DPAM_SE_CONFIG

    dpam = load_enhancer("dpam-se", device="cpu")
    can = build_network("can", **DPAM_SE_CONFIG, epsilon=dpam.config["epsilon"]).eval()
    can.load_state_dict(dpam.state_dict())  # same layers, same parameter names
    assert can.whole_signal_statistics and not build_network("can").whole_signal_statistics
    x = 0.1 * torch.randn(2, 1234)  # not a multiple of the dilations: the padded statistics count
    with torch.no_grad():
        assert torch.equal(can(x), dpam(x))
        unpadded = build_network("can", **{**DPAM_SE_CONFIG, "pad_dilated": False}).eval()
        unpadded.load_state_dict(dpam.state_dict())
        assert not torch.allclose(unpadded(x), dpam(x), atol=1e-4)
    with pytest.raises(ValueError, match="norm must be one of"):
        build_network("can", norm="layer")


def test_a_can_config_saved_before_the_norm_switches_rebuilds():
    old = {
        "sample_rate": 16000,
        "n_layers": 4,
        "channels": 8,
        "kernel_size": 3,
        "negative_slope": 0.2,
        "last_undilated": True,
        "residual": False,
    }
    net = build_network("can", **old)
    assert net.config["norm"] == "batch" and not net.config["pad_dilated"]
    assert {k: net.config[k] for k in old} == old
