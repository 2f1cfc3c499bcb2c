"""Single-file metric checkpoints: weights + everything needed to rebuild and judge them.

A checkpoint is a dict of tensors and plain types only, so it loads with
``torch.load(weights_only=True)`` (no pickled classes, unlike denoiser). Keys:

- ``format``: ``"jndlab.metric/1"``; ``model_class``: ``"DPAMMetric"``
- ``model_config``: the constructor kwargs; ``state_dict``: the weights
- ``training_config``, ``seed``, ``code_version``, ``metrics``, ``created_utc``
- ``trained_on``: ``"human"``, ``"simulated"``, ``"mixed"`` or ``"unknown"``, and
  ``perceptual_validity``: a sentence every printout repeats. jndlab ships no weights
  claiming perceptual validity until they are trained on real human judgments.
- ``trainer_state`` (optional): optimizer, scaler, epoch, history ... for resume.
- converted published metrics (``model.dpam_import``) add ``variant``, ``name``,
  ``provenance`` (source repository, commit, sha256 of the source files, licence,
  ``trained_on``, note) and ``head_fitted: False`` (training fits the judgment head first).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from perturbations.files import atomic_path
from perturbations.provenance import code_version

if TYPE_CHECKING:
    from model.network import DPAMMetric

FORMAT = "jndlab.metric/1"
TRAINED_ON = ("human", "simulated", "mixed", "unknown")
_VALIDITY = {
    "human": "trained on human judgments; check its validation metrics before relying on it",
    "simulated": "DEMO ONLY: trained on simulated listeners, not on human judgments; "
    "it makes no claim of perceptual validity",
    "mixed": "trained on a mix of human and simulated judgments; it makes no claim of perceptual validity",
    "unknown": "the source of its training judgments is not recorded; it makes no claim of perceptual validity",
}


def validity_note(trained_on: str) -> str:
    if trained_on not in TRAINED_ON:
        raise ValueError(f"trained_on must be one of {TRAINED_ON}, got {trained_on!r}")
    return _VALIDITY[trained_on]


def build_payload(
    model: DPAMMetric,
    *,
    training_config: dict[str, Any],
    seed: int,
    metrics: dict[str, Any],
    trained_on: str,
    trainer_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of ``model`` (keys: see the module doc); tensors copied to the CPU.

    Raises:
        ValueError: ``trained_on`` is not one of ``TRAINED_ON``.
    """
    payload = {
        "format": FORMAT,
        "model_class": type(model).__name__,
        "model_config": dict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "training_config": training_config,
        "seed": int(seed),
        "code_version": code_version(),
        "metrics": metrics,
        "trained_on": trained_on,
        "perceptual_validity": validity_note(trained_on),
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if trainer_state is not None:
        payload["trainer_state"] = trainer_state
    return payload


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the same folder, fsync, then ``os.replace``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``) and check its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure: one clear line
        raise ValueError(f"{path}: not a readable jndlab checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a jndlab metric checkpoint (format {FORMAT!r} expected)")
    return payload


def rebuild(payload: dict[str, Any]) -> DPAMMetric:
    """The module described by a checkpoint dict, weights loaded (uses only ``model.network``).

    Raises:
        ValueError: an unknown ``model_class``, or a config the class refuses.
        RuntimeError: the state dict does not fit the rebuilt module (``load_state_dict``).
    """
    from model.network import DPAMMetric

    classes = {"DPAMMetric": DPAMMetric}
    name = payload.get("model_class")
    if name not in classes:
        raise ValueError(f"unknown model_class {name!r} in checkpoint")
    model = classes[name](**payload["model_config"])
    model.load_state_dict(payload["state_dict"])
    return model


def describe(payload: dict[str, Any]) -> str:
    """One line for printouts: which metric (and variant) it is, what it was trained on, what it claims."""
    if payload.get("variant"):  # a converted published metric: its note names the variant and the data
        return f"note: {payload.get('perceptual_validity', '')}"
    return f"note: metric checkpoint {payload.get('trained_on', 'unknown')}: {payload.get('perceptual_validity', '')}"
