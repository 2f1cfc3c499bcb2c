"""jndlab model: DPAM in PyTorch, a differentiable perceptual metric learned from judgments.

    from model import load_metric
    metric = load_metric("runs/dpam/best.pt")          # frozen, eval mode
    loss = metric(clean, enhanced).mean()              # differentiable wrt enhanced
    d = metric(ref_44k, est_44k, sample_rate=44100)    # resampled with torchaudio
"""
from __future__ import annotations

import os

import torch

from model.network import DPAMMetric

__all__ = ["DPAMMetric", "load_metric"]


def load_metric(ckpt_path: str | os.PathLike, device: str | torch.device | None = None) -> torch.nn.Module:
    """Rebuild the metric in a checkpoint: ``(ref, est[, sample_rate]) -> distance``.

    The module is in eval mode with every parameter frozen (``requires_grad=False``);
    gradients still flow to the inputs. ``device`` defaults to CUDA when present.
    Its ``trained_on`` and ``perceptual_validity`` attributes repeat the checkpoint's note.
    """
    from model.checkpoint import read_checkpoint, rebuild

    payload = read_checkpoint(ckpt_path)
    metric = rebuild(payload)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    metric.to(device).eval()
    for param in metric.parameters():
        param.requires_grad_(False)
    metric.trained_on = payload.get("trained_on", "unknown")
    metric.perceptual_validity = payload.get("perceptual_validity", "")
    return metric
