"""The perturbation families. Each module holds one ``Family`` subclass.

The small validation helpers below are shared by every family; they are
defined before the submodules are imported so those can import them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perturbations.audio import SUPPORTED_SAMPLE_RATES


def check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Validate mono float audio and a supported rate; return it as float32."""
    if (
        isinstance(sample_rate, bool)
        or int(sample_rate) != sample_rate
        or int(sample_rate) not in SUPPORTED_SAMPLE_RATES
    ):
        raise ValueError(f"sample_rate {sample_rate!r} Hz is not supported; use one of {SUPPORTED_SAMPLE_RATES}")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got shape {audio.shape}")
    if audio.shape[0] < 2:
        raise ValueError(f"audio needs at least 2 samples, got {audio.shape[0]}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples")
    return audio.astype(np.float32, copy=False)


def param(
    params: dict[str, Any], key: str, family: str, *, low: float | None = None, high: float | None = None
) -> float:
    """Read one numeric param, with a clear ValueError when missing or out of range."""
    if not isinstance(params, dict) or key not in params:
        raise ValueError(
            f"{family}: params lack {key!r} (got keys {sorted(params) if isinstance(params, dict) else params!r})"
        )
    value = params[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
    ):
        raise ValueError(f"{family}: param {key} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{family}: param {key}={value!r} lies outside [{low}, {high}]")
    return float(value)


from perturbations.families.chain import ChainFamily  # noqa: E402
from perturbations.families.clipping import ClippingFamily  # noqa: E402
from perturbations.families.eq import EqFamily  # noqa: E402
from perturbations.families.lowpass import LowpassFamily  # noqa: E402
from perturbations.families.mp3 import Mp3Family  # noqa: E402
from perturbations.families.mulaw import MulawFamily  # noqa: E402
from perturbations.families.noise import NoiseFamily  # noqa: E402
from perturbations.families.reverb import ReverbFamily  # noqa: E402

__all__ = [
    "ChainFamily",
    "ClippingFamily",
    "EqFamily",
    "LowpassFamily",
    "Mp3Family",
    "MulawFamily",
    "NoiseFamily",
    "ReverbFamily",
    "check_audio",
    "param",
]
