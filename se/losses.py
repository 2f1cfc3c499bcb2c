"""Training losses for enhancement: the learned metric, L1, multi-resolution STFT, and sums.

Every loss is ``loss(estimate, clean) -> scalar`` on ``(batch, samples)`` waveforms.
``build_loss("metric:1,l1:0.5", metric_checkpoint=...)`` parses a spec into a
``WeightedLoss`` whose forward also reports each term (for history.json).

The metric loss wraps ``model.load_metric``: the metric is frozen (no parameter
requires grad, eval mode kept even when the loss module is put in train mode, so
its dropout never fires) and the gradient reaches the estimate only.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from perturbations.manifest import sha256_file

LOSS_NAMES = ("metric", "l1", "mrstft")


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"metric:1,l1:0.5"`` -> ``[("metric", 1.0), ("l1", 0.5)]``; a bare name has weight 1.

    Raises ValueError for an empty spec, an unknown name, a repeated name, or a weight
    that is not a finite number > 0.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("empty loss spec; expected e.g. 'l1:1' or 'metric:1,l1:1'")
    terms: list[tuple[str, float]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            raise ValueError(f"empty term in loss spec {spec!r}")
        name, _, weight_text = part.partition(":")
        name = name.strip().lower()
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r} in {spec!r}; choose from {', '.join(LOSS_NAMES)}")
        try:
            weight = float(weight_text) if weight_text.strip() else 1.0
        except ValueError:
            raise ValueError(f"loss weight {weight_text!r} for {name!r} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"loss weight for {name!r} must be a finite number > 0, got {weight_text!r}")
        if any(name == n for n, _ in terms):
            raise ValueError(f"loss {name!r} appears more than once in {spec!r}")
        terms.append((name, weight))
    return terms


def format_loss_spec(terms: list[tuple[str, float]]) -> str:
    return ",".join(f"{name}:{weight:g}" for name, weight in terms)


class L1Loss(nn.Module):
    def forward(self, estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(estimate.float(), clean.float())


class STFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1 at one resolution (Yamamoto et al. 2020)."""

    window: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, fft_size: int, hop_samples: int, win_samples: int):
        super().__init__()
        self.fft_size, self.hop_samples, self.win_samples = fft_size, hop_samples, win_samples
        self.register_buffer("window", torch.hann_window(win_samples), persistent=False)

    def _magnitude(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.fft_size, self.hop_samples, self.win_samples, self.window, return_complex=True)
        # clamp the power: the gradient of sqrt at 0 is infinite
        return torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=1e-7))

    def forward(self, estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        est, ref = self._magnitude(estimate), self._magnitude(clean)
        convergence = torch.linalg.norm(ref - est) / torch.linalg.norm(ref).clamp_min(1e-7)
        log_magnitude = F.l1_loss(torch.log(est), torch.log(ref))
        return convergence + log_magnitude


class MultiResolutionSTFTLoss(nn.Module):
    """Mean of ``STFTLoss`` at several resolutions; defaults as facebookresearch/denoiser."""

    def __init__(self, fft_sizes=(1024, 2048, 512), hop_samples=(120, 240, 50), win_samples=(600, 1200, 240)):
        super().__init__()
        if not len(fft_sizes) == len(hop_samples) == len(win_samples):
            raise ValueError("fft_sizes, hop_samples and win_samples must have the same length")
        self.resolutions = nn.ModuleList(STFTLoss(f, h, w) for f, h, w in zip(fft_sizes, hop_samples, win_samples))

    def forward(self, estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        # float32 STFTs even under autocast: fp16 FFTs lose the quiet bins
        with torch.autocast(estimate.device.type, enabled=False):
            est, ref = estimate.float(), clean.float()
            return sum(loss(est, ref) for loss in self.resolutions) / len(self.resolutions)


class MetricLoss(nn.Module):
    """Mean learned-metric distance d(clean, estimate) from a ``model/`` checkpoint or shipped
    metric name (``"dpam"``: DPAM's published scratch metric, trained on human JND judgments).

    ``info`` records what a checkpoint of the enhancer must say about the metric: its
    path, sha256, and ``trained_on`` / ``perceptual_validity`` notes.
    """

    def __init__(self, checkpoint: str | os.PathLike, sample_rate: int, device: str | torch.device | None = None):
        super().__init__()
        from model import load_metric

        try:  # a shipped metric's name ("dpam") or a path
            from model import metric_path

            path = Path(metric_path(checkpoint))
        except ImportError:
            path = Path(checkpoint)
        self.metric = load_metric(path, device=device or "cpu")
        self.sample_rate = int(sample_rate)
        self.info: dict[str, Any] = {
            "path": str(path.resolve()),
            "sha256": sha256_file(path),
            "trained_on": getattr(self.metric, "trained_on", "unknown"),
            "perceptual_validity": getattr(self.metric, "perceptual_validity", ""),
            "sample_rate": int(self.metric.sample_rate),
        }

    def train(self, mode: bool = True) -> MetricLoss:
        super().train(mode)
        self.metric.eval()  # frozen: never dropout, whatever the enhancer's mode
        return self

    def forward(self, estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        rate = None if self.sample_rate == self.metric.sample_rate else self.sample_rate
        return self.metric(clean, estimate, sample_rate=rate).mean()


class WeightedLoss(nn.Module):
    """Σ weight·term. ``forward`` returns ``(total, {name: float value})``."""

    def __init__(self, terms: list[tuple[str, float]], modules: dict[str, nn.Module]):
        super().__init__()
        self.terms = list(terms)
        self.losses = nn.ModuleDict(modules)

    @property
    def spec(self) -> str:
        return format_loss_spec(self.terms)

    @property
    def metric_loss(self) -> MetricLoss | None:
        """The ``metric`` term, when the spec has one.

        Raises:
            TypeError: the ``metric`` term is not a ``MetricLoss``.
        """
        if "metric" not in self.losses:
            return None
        metric = self.losses["metric"]
        if not isinstance(metric, MetricLoss):  # build_loss makes the metric term a MetricLoss
            raise TypeError(f"the metric term is a {type(metric).__name__}, not a MetricLoss")
        return metric

    @property
    def metric_info(self) -> dict[str, Any] | None:
        metric = self.metric_loss
        return None if metric is None else metric.info

    def forward(self, estimate: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total = estimate.new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        for name, weight in self.terms:
            value = self.losses[name](estimate, clean).float()
            parts[name] = float(value.detach())
            total = total + weight * value
        return total, parts


def build_loss(
    spec: str,
    *,
    sample_rate: int,
    metric_checkpoint: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> WeightedLoss:
    """A ``WeightedLoss`` from a spec; ``metric`` needs ``metric_checkpoint``."""
    terms = parse_loss_spec(spec)
    modules: dict[str, nn.Module] = {}
    for name, _ in terms:
        if name == "metric":
            if metric_checkpoint is None:
                raise ValueError("the loss spec uses 'metric' but no metric checkpoint was given (--metric CKPT)")
            modules[name] = MetricLoss(metric_checkpoint, sample_rate, device)
        elif name == "l1":
            modules[name] = L1Loss()
        else:
            modules[name] = MultiResolutionSTFTLoss()
    loss = WeightedLoss(terms, modules)
    return loss.to(device) if device is not None else loss
