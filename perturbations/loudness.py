"""ITU-R BS.1770-4 integrated loudness (via pyloudnorm) and loudness matching.

Loudness is measured with pyloudnorm's K-weighted, gated meter (BS.1770-4,
400 ms blocks, 75 % overlap, absolute gate -70 LUFS, relative gate -10 LU).
Gains are computed here rather than with ``pyloudnorm.normalize`` so that no
warning is raised and clipping is left to the caller to decide (jndlab never
clips silently; see ``perturbations.stimulus``).
"""
from __future__ import annotations

import functools

import numpy as np
import pyloudnorm

from perturbations.audio import SUPPORTED_SAMPLE_RATES

BLOCK_S = 0.4  # BS.1770 gating block: shorter clips cannot be measured


@functools.lru_cache(maxsize=None)
def _meter(sample_rate: int) -> pyloudnorm.Meter:
    # The K-weighting filters depend only on the rate; build them once per rate.
    return pyloudnorm.Meter(sample_rate, block_size=BLOCK_S)


def _check(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    if int(sample_rate) not in SUPPORTED_SAMPLE_RATES:
        raise ValueError(
            f"sample_rate {sample_rate!r} Hz is not supported; use one of {SUPPORTED_SAMPLE_RATES}"
        )
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples")
    if audio.shape[0] < BLOCK_S * sample_rate:
        raise ValueError(
            f"clip too short to measure loudness: {audio.shape[0] / sample_rate:.3f} s "
            f"< {BLOCK_S} s (one BS.1770 gating block)"
        )
    return audio.astype(np.float64)


def loudness_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness of mono ``audio`` in LUFS. Raises ValueError if silent or too short."""
    x = _check(audio, sample_rate)
    value = float(_meter(int(sample_rate)).integrated_loudness(x))
    if not np.isfinite(value):
        # every block fell below the -70 LUFS absolute gate
        raise ValueError("clip is silent: no block above the -70 LUFS absolute gate")
    return value


def match_loudness(audio: np.ndarray, reference_lufs: float, sample_rate: int) -> np.ndarray:
    """Scale ``audio`` so its integrated loudness equals ``reference_lufs``. May exceed full scale."""
    if not np.isfinite(reference_lufs):
        raise ValueError(f"reference_lufs must be finite, got {reference_lufs!r}")
    gain_db = float(reference_lufs) - loudness_lufs(audio, sample_rate)
    return (np.asarray(audio, dtype=np.float64) * 10.0 ** (gain_db / 20.0)).astype(np.float32)


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float) -> np.ndarray:
    """Scale ``audio`` to ``target_lufs`` (e.g. -23 LUFS, EBU R128). May exceed full scale."""
    return match_loudness(audio, target_lufs, sample_rate)
