"""jndlab model: DPAM in PyTorch, a differentiable perceptual metric learned from judgments.

    from model import load_metric
    metric = load_metric("dpam")                       # DPAM's published scratch metric (human JND data)
    loss = metric(clean, enhanced, sample_rate=16000).mean()   # differentiable wrt enhanced
    metric = load_metric("runs/dpam/best.pt")          # a checkpoint trained here

Shipped metrics (converted from pranaymanocha/PerceptualAudio @ 4bd0a84, MIT licence, see
``model/weights/LICENSE``): ``"dpam"`` (scratch), ``"dpam-finetune"``, ``"dpam-linear"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from model.network import DPAMMetric

__all__ = ["SHIPPED_METRICS", "DPAMMetric", "load_metric", "metric_path"]

WEIGHTS = Path(__file__).resolve().parent / "weights"
SHIPPED_METRICS = {"dpam": "dpam_scratch.pt", "dpam-finetune": "dpam_finetune.pt", "dpam-linear": "dpam_linear.pt"}


def metric_path(name_or_path: str | os.PathLike) -> Path:
    """The checkpoint file of a shipped metric name (``SHIPPED_METRICS``) or of a path.

    Raises ``FileNotFoundError`` naming the shipped metrics when neither matches.
    """
    key = str(name_or_path)
    if key in SHIPPED_METRICS:
        path = WEIGHTS / SHIPPED_METRICS[key]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the shipped weights of {key!r} are missing from this installation")
        return path
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found (shipped metrics: {', '.join(SHIPPED_METRICS)})")
    return path


def load_metric(name_or_path: str | os.PathLike, device: str | torch.device | None = None) -> DPAMMetric:
    """Rebuild a metric: ``(ref, est[, sample_rate]) -> distance``, offline.

    ``name_or_path``: ``"dpam"``, ``"dpam-finetune"``, ``"dpam-linear"`` (shipped weights) or
    a checkpoint path. The module is in eval mode with every parameter frozen
    (``requires_grad=False``); gradients still flow to the inputs. ``device`` defaults to
    CUDA when present. Attributes: ``trained_on``, ``perceptual_validity`` (the checkpoint's
    note), ``variant`` (e.g. ``"scratch"``; ``None`` for checkpoints trained here),
    ``metric_name`` and ``provenance`` (source repository, commit, sha256, licence).

    Raises:
        FileNotFoundError: neither a shipped metric name nor an existing checkpoint file.
        ValueError: the file is not a readable jndlab metric checkpoint, or names an unknown
            model class.
    """
    from model.checkpoint import read_checkpoint, rebuild

    payload = read_checkpoint(metric_path(name_or_path))
    metric = rebuild(payload)
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    metric.to(device).eval()
    for param in metric.parameters():
        param.requires_grad_(False)
    metric.trained_on = payload.get("trained_on", "unknown")
    metric.perceptual_validity = payload.get("perceptual_validity", "")
    metric.variant = payload.get("variant")
    metric.metric_name = payload.get("name", str(name_or_path))
    metric.provenance = payload.get("provenance", {})
    return metric
