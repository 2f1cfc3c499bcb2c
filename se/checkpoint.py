"""Single-file enhancer checkpoints: weights + what rebuilds them + how they were trained.

Plain dicts of tensors and plain types (``torch.load(weights_only=True)``). Keys:

- ``format``: ``"jndlab.se/1"``; ``network``: a name in ``se.networks.NETWORKS``;
  ``network_config``: its constructor kwargs; ``state_dict``; ``sample_rate``
- ``loss_spec`` (e.g. ``"metric:1,l1:1"``) and ``metric``: ``None`` or ``{path, sha256,
  trained_on, perceptual_validity, sample_rate}`` of the metric checkpoint used
- ``training_config``, ``seed``, ``code_version``, ``metrics``, ``created_utc``
- ``trainer_state`` (``last.pt`` only): optimizer, scaler, step, history ... for resume
- ``provenance`` and ``trained_on`` (converted published models only)

Shipped weights load by name wherever a checkpoint path is taken (``SHIPPED``):
``dpam-se`` is DPAM's published speech-enhancement model, converted by
``python -m se import-dpam`` into ``se/weights/dpam_se.pt`` (MIT licence notice in
``se/weights/LICENSE-DPAM``, provenance in ``se/weights/dpam_se.json``).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import torch

from se.networks import NETWORKS, EnhancementNetwork, build_network

FORMAT = "jndlab.se/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = {"dpam-se": "dpam_se.pt"}


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A shipped model's name (``dpam-se``) -> its file in the package; any other value -> ``Path(value)``.

    An existing file of that name wins over the shipped model.
    """
    text = os.fspath(path)
    if text in SHIPPED and not Path(text).exists():
        shipped = WEIGHTS_DIR / SHIPPED[text]
        if not shipped.is_file():
            raise FileNotFoundError(
                f"{shipped}: the shipped model {text!r} is missing from this installation "
                "(python -m se import-dpam makes it)"
            )
        return shipped
    return Path(path)


def build_payload(
    network: EnhancementNetwork,
    *,
    loss_spec: str,
    metric: dict | None,
    training_config: dict[str, Any],
    seed: int,
    metrics: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from perturbations.provenance import code_version

    payload = {
        "format": FORMAT,
        "network": network.name,
        "network_config": dict(network.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        "sample_rate": int(network.sample_rate),
        "loss_spec": loss_spec,
        "metric": metric,
        "training_config": training_config,
        "seed": int(seed),
        "code_version": code_version(),
        "metrics": metrics,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    if trainer_state is not None:
        payload["trainer_state"] = trainer_state
    return payload


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Atomic write (temporary file, fsync, rename): the metric package's writer."""
    from model.checkpoint import save_checkpoint as _save

    return _save(payload, path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at ``path`` (or a shipped model's name, ``SHIPPED``) as a dict; clear errors."""
    path = resolve_checkpoint(path)
    if not path.is_file():
        shipped = f" (shipped models: {', '.join(SHIPPED)})"
        raise FileNotFoundError(f"{path}: checkpoint not found{shipped}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure: one clear line
        raise ValueError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = (
            " (it is a metric checkpoint: pass it as --metric)"
            if isinstance(payload, dict) and str(payload.get("format", "")).startswith("jndlab.metric")
            else ""
        )
        raise ValueError(f"{path}: not a jndlab enhancer checkpoint (format {FORMAT!r} expected){hint}")
    if payload.get("network") not in NETWORKS:
        raise ValueError(f"{path}: unknown network {payload.get('network')!r}; known: {', '.join(NETWORKS)}")
    return payload


def rebuild(payload: dict[str, Any]) -> EnhancementNetwork:
    """The network a checkpoint dict describes, weights loaded.

    Raises:
        ValueError: an unknown network name, or a config the class refuses.
        RuntimeError: the state dict does not fit the network (``load_state_dict``).
    """
    network = build_network(payload["network"], **payload["network_config"])
    network.load_state_dict(payload["state_dict"])
    return network


def load_enhancer(path: str | os.PathLike, device: str | torch.device | None = None) -> EnhancementNetwork:
    """The enhancer in a checkpoint, in eval mode, on ``device`` (default CUDA when present).

    Raises:
        FileNotFoundError: no such checkpoint (or shipped model missing from the installation).
        ValueError: not a readable jndlab enhancer checkpoint, or an unknown network.
    """
    network = rebuild(read_checkpoint(path))
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    return network.to(device).eval()
