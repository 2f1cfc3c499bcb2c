"""Enhancement networks, waveform in, waveform out, and a registry of them.

``build_network(name, **config)`` makes one. Each class keeps its constructor kwargs in
``self.config`` (plain values), so a checkpoint rebuilds it from ``(name, config)`` with
only this module imported. To add an architecture: subclass ``EnhancementNetwork`` (an
``nn.Module`` that declares what ``se`` reads), give it a ``name``, ``self.config``,
``self.sample_rate`` and a ``receptive_field`` property (in samples), and decorate it with
``@register``.

The context aggregation network (CAN) of Germain, Chen & Koltun (2019), as DPAM's SE
code built it (``senet`` in its TensorFlow code):

- layer 0: Conv1d(1 -> 64, kernel 3), undilated;
- layers 1..12: Conv1d(64 -> 64, kernel 3, dilation 2^i);
- one more undilated Conv1d(64 -> 64, kernel 3) (DPAM's ``se_conv_last``);
- each conv followed by adaptive batch-norm  w0·x + w1·BN(x)  (w0 = 1, w1 = 0 at the
  start, learnable scalars) and LeakyReLU(0.2);
- a final 1×1 Conv1d(64 -> 1) with bias and no activation.

With the defaults: 161,821 parameters (convs 159,936 without biases, as slim drops them
before a normaliser; 14 adaptive BNs 1,820 = 14·(2 scalars + 64 scales + 64 shifts);
the 1×1 output 65) and a receptive field of 16,385 samples = 1.024 s at 16 kHz:
1 + 2·(1 + Σ_{i=1}^{12} 2^i + 1). Padding is "same" (zeros), so the output has the
input's length.

Dilation is ``nn.Conv1d(dilation=d)`` on (batch, channels, time) tensors. DPAM's TF code
emulated it by reshaping (batch, 1, time, channels) into (batch, time/d, d, channels)
and back; a reshape that puts the axes in the wrong order silently mixes channels
and distant time steps. No reshape happens here (tests/se/test_networks.py checks
the dilation against the polyphase construction done right, and time locality).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict, TypeVar

import torch
import torch.nn.functional as F
from torch import nn


class EnhancementNetwork(nn.Module):
    """What ``se`` reads from an enhancement network (declarations only; nothing at run time).

    ``name``: the registry key (class attribute); ``config``: the constructor kwargs (plain
    values); ``sample_rate``: the rate (Hz) it works at. ``receptive_field`` (samples) is
    read with a default of 1, so it is not declared here.
    """

    name: ClassVar[str]
    config: dict[str, Any]
    sample_rate: int


class DPAMSwitches(TypedDict):
    norm: str
    pad_dilated: bool
    last_undilated: bool
    residual: bool


N = TypeVar("N", bound=type[EnhancementNetwork])
NETWORKS: dict[str, type[EnhancementNetwork]] = {}
# the switches that make the CAN DPAM's published SE network (``DPAMSENetwork``, ``dpam_can``)
DPAM_SE_CONFIG: DPAMSwitches = {"norm": "whole_signal", "pad_dilated": True, "last_undilated": True, "residual": False}


def register(cls: N) -> N:
    """Class decorator: make ``cls`` buildable by its ``name``.

    Raises:
        ValueError: ``cls`` has no ``name``, or another class holds that name.
    """
    name = getattr(cls, "name", "")
    if not name:
        raise ValueError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    if name in NETWORKS and NETWORKS[name] is not cls:
        raise ValueError(f"network name {name!r} is already registered by {NETWORKS[name].__name__}")
    NETWORKS[name] = cls
    return cls


def available_networks() -> list[str]:
    """The registered names, in registration order."""
    return list(NETWORKS)


def build_network(name: str, **config: Any) -> EnhancementNetwork:
    """The network ``name`` built with ``config`` (its constructor kwargs).

    Raises:
        ValueError: an unknown name, or a config the class refuses.
        TypeError: an unknown kwarg.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")
    return NETWORKS[name](**config)


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters (trainable or not; buffers such as running statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


class AdaptiveBatchNorm1d(nn.Module):
    """w0·x + w1·BN(x) with learnable scalars (Germain et al.): starts as the identity.

    BN here is ``nn.BatchNorm1d`` with an affine shift and scale per channel; eval mode
    uses the running statistics, so inference is a per-sample affine map (chunking an
    input in time then cannot change the result).
    """

    def __init__(self, channels: int, w0: float = 1.0, w1: float = 0.0):
        super().__init__()
        self.w0 = nn.Parameter(torch.tensor(float(w0)))
        self.w1 = nn.Parameter(torch.tensor(float(w1)))
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w0 * x + self.w1 * self.bn(x)


class WholeSignalAdaptiveNorm(nn.Module):
    """DPAM's ``nm``: w0·x + w1·(BN(x) + beta), BN with each signal's own statistics.

    ``(batch, channels, time)`` -> same shape. Germain et al.'s ``nm`` wraps TF-slim's
    ``batch_norm`` with its defaults: training mode (also at inference), so each batch is
    normalised by its own mean and *biased* variance over time (and batch), epsilon 0.001,
    a learned offset ``beta`` and no learned scale; its moving averages are never used.
    DPAM trained and ran it on one file at a time (batch 1), so here every signal of a
    batch gets its own statistics: items never mix, and a batch gives what one-by-one
    calls give. ``w0`` starts at 1 and ``w1`` at 0 (the identity), as in ``nm``.
    Source: pranaymanocha/PerceptualAudio ``se_code/helper.py`` (``nm``) and TF-slim's
    ``batch_norm`` defaults (center=True, scale=False, epsilon=0.001, is_training=True).
    """

    def __init__(self, channels: int, epsilon: float = 1e-3):
        super().__init__()
        self.epsilon = float(epsilon)
        self.w0 = nn.Parameter(torch.tensor(1.0))
        self.w1 = nn.Parameter(torch.tensor(0.0))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = (x - mean).square().mean(dim=-1, keepdim=True)  # biased, as tf.nn.moments
        normalised = (x - mean) * torch.rsqrt(var + self.epsilon) + self.beta[:, None]
        return self.w0 * x + self.w1 * normalised


NORMS = ("batch", "whole_signal")


@register
class ContextAggregationNetwork(EnhancementNetwork):
    """CAN denoiser: ``(samples,)`` or ``(batch, samples)`` float waveform -> same shape.

    sample_rate: the rate (Hz) the network is trained at; recorded, not used in forward.
    n_layers: dilated-stack depth (layer 0 undilated, layers 1..n_layers-1 dilated 2^i).
    channels, kernel_size (odd: "same" zero padding), negative_slope (LeakyReLU).
    last_undilated: the extra undilated kernel-3 layer DPAM's code has before the 1×1.
    residual: output = input + the 1×1 conv's output (the network learns the correction,
        and starts as the identity). Off by default (DPAM's CAN maps to the clean waveform
        directly); with it off, L1 training from scratch can sit at a silent output for
        hundreds of steps (benchmarks/se_comparison.py).
    norm: ``"batch"`` (``AdaptiveBatchNorm1d``: running statistics in eval mode, so inference
        is a per-sample map) or ``"whole_signal"`` (``WholeSignalAdaptiveNorm``: each signal's
        own statistics, at inference too; DPAM's ``nm``).
    epsilon: the variance floor of the ``"whole_signal"`` norm (the batch norm keeps PyTorch's 1e-5).
    pad_dilated: reproduce DPAM's dilation-by-reshape: each dilated layer's input is
        zero-padded at its end to a multiple of its dilation d, convolved, normalised over
        the padded positions too, and trimmed back (``DPAMSENetwork``).

    Raises ``ValueError`` for a non-positive sample rate, fewer than one layer or channel,
    an even kernel, an unknown norm or a non-positive epsilon; ``forward`` raises it for
    input of another rank or without samples.
    """

    name = "can"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_layers: int = 13,
        channels: int = 64,
        kernel_size: int = 3,
        negative_slope: float = 0.2,
        last_undilated: bool = True,
        residual: bool = False,
        norm: str = "batch",
        epsilon: float = 1e-3,
        pad_dilated: bool = False,
    ):
        super().__init__()
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if n_layers < 1 or channels < 1:
            raise ValueError("n_layers and channels must be at least 1")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive (same-length output), got {kernel_size}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self.config = {
            "sample_rate": int(sample_rate),
            "n_layers": int(n_layers),
            "channels": int(channels),
            "kernel_size": int(kernel_size),
            "negative_slope": float(negative_slope),
            "last_undilated": bool(last_undilated),
            "residual": bool(residual),
            "norm": norm,
            "epsilon": float(epsilon),
            "pad_dilated": bool(pad_dilated),
        }
        self.sample_rate = int(sample_rate)
        self.kernel_size = int(kernel_size)
        self.negative_slope = float(negative_slope)
        self.whole_signal_statistics = norm == "whole_signal"  # se.enhance runs such a network in one pass
        self.pad_dilated = bool(pad_dilated)
        self.residual = bool(residual)
        dilations = [1] + [2**i for i in range(1, n_layers)] + ([1] if last_undilated else [])
        self.dilations = tuple(dilations)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        channels_in = 1
        for d in dilations:
            # no bias: the adaptive norm's w0·x term would carry it, and the norm's own shift does
            self.convs.append(
                nn.Conv1d(channels_in, channels, kernel_size, dilation=d, padding=d * (kernel_size // 2), bias=False)
            )
            self.norms.append(
                AdaptiveBatchNorm1d(channels) if norm == "batch" else WholeSignalAdaptiveNorm(channels, epsilon)
            )
            channels_in = channels
        self.output = nn.Conv1d(channels, 1, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights and zero biases: TF-slim ``conv2d``'s defaults, as in DPAM's code.

        PyTorch's own Conv1d default (Kaiming-uniform with a = √5, a third of Glorot's
        variance here) shrinks the signal about 3× per layer: through the 14-conv stack
        the initial output is ~1e-6 of the input and early training stalls at a silent
        output. Glorot keeps it at ~1e-2 (LeakyReLU still halves the power of each layer).
        """
        for conv in [*self.convs, self.output]:
            nn.init.xavier_uniform_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @property
    def receptive_field(self) -> int:
        """Input samples that one output sample depends on (centred on it); with whole-signal
        statistics the output also depends on the whole signal through them."""
        return 1 + sum((self.kernel_size - 1) * d for d in self.dilations)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        if noisy.ndim not in (1, 2):
            raise ValueError(f"expected audio of shape (samples,) or (batch, samples), got {tuple(noisy.shape)}")
        if noisy.shape[-1] < 1:
            raise ValueError("expected at least one sample")
        scalar = noisy.ndim == 1
        x = (noisy.unsqueeze(0) if scalar else noisy).unsqueeze(1)  # (batch, 1 channel, time)
        length = x.shape[-1]
        for d, conv, norm in zip(self.dilations, self.convs, self.norms):
            pad = (-length) % d if self.pad_dilated else 0  # signal_to_dilated's pad_elements
            y = conv(F.pad(x, (0, pad)) if pad else x)
            x = F.leaky_relu(norm(y), self.negative_slope)
            if pad:
                x = x[..., :length]
        out = self.output(x).squeeze(1)
        if self.residual:
            out = out + (noisy.unsqueeze(0) if scalar else noisy)
        return out[0] if scalar else out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


@register
class DPAMSENetwork(ContextAggregationNetwork):
    """DPAM's speech-enhancement network exactly as its TensorFlow graph computes it.

    ``(samples,)`` or ``(batch, samples)`` float waveform at 16 kHz in [-1, 1] -> same shape.
    The CAN above with DPAM's switches (``DPAM_SE_CONFIG``): ``norm="whole_signal"``,
    ``pad_dilated=True``, ``last_undilated=True``, ``residual=False``; its checkpoints keep
    the name ``dpam_can`` and the config of the arguments below.

    Germain, Chen & Koltun's context aggregation network in the version DPAM trained
    (pranaymanocha/PerceptualAudio ``se_code/network_model.py``, ``senet``; its weights
    ship as ``dpam-se``, converted by ``python -m se import-dpam``):

    - ``se_conv_0``: Conv(1 -> 64, kernel 3), undilated; ``se_conv_i`` (i = 1..12):
      Conv(64 -> 64, kernel 3, dilation 2^i); ``se_conv_last``: Conv(64 -> 64, kernel 3),
      undilated. No conv bias. Each followed by ``WholeSignalAdaptiveNorm`` and LeakyReLU 0.2.
    - ``se_fc_last``: 1×1 Conv(64 -> 1) with bias, no activation.

    What makes it differ from the default CAN: the normalisation uses the statistics of
    the whole signal (at inference too), and the dilated layers reproduce the original's
    dilation-by-reshape (``signal_to_dilated``): the layer's input is zero-padded at its
    end to a multiple of the dilation d, convolved, normalised over all of those (padded)
    positions, and trimmed back. The padded positions' outputs (the left tap times the
    signal d samples earlier) enter the mean and variance; a port without them differs by
    up to ~2.5e-3 on the output (facts in shared/dpam/published/README.md; parity with the
    TF graph: tests/se/test_dpam_se.py).

    Consequences: the output at a sample depends (through the statistics) on the whole
    signal, not only on the receptive field below; enhancing a long file in chunks gives
    each chunk its own statistics and so a different output (``se.enhance`` runs it in
    one pass by default). 160,925 parameters (convs 159,936; 14 norms of
    2 scalars + 64 offsets; the 1×1 output 65); receptive field 16,385 samples (1.024 s).
    """

    name = "dpam_can"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_layers: int = 13,
        channels: int = 64,
        kernel_size: int = 3,
        negative_slope: float = 0.2,
        epsilon: float = 1e-3,
    ):
        super().__init__(
            sample_rate, n_layers, channels, kernel_size, negative_slope, epsilon=epsilon, **DPAM_SE_CONFIG
        )
        self.config = {
            k: self.config[k]
            for k in ("sample_rate", "n_layers", "channels", "kernel_size", "negative_slope", "epsilon")
        }
