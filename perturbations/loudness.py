"""ITU-R BS.1770-4 integrated loudness and loudness matching.

The meter is pyloudnorm's (K-weighted, gated, BS.1770-4: 400 ms blocks, 75 %
overlap, absolute gate -70 LUFS, relative gate -10 LU), computed the same way
but vectorised. pyloudnorm stays the reference: its K-weighting biquads
(``pyloudnorm.Meter(rate).filter_class = "K-weighting"``: a +4 dB high shelf at
1.5 kHz and a 38 Hz high-pass, designed per sample rate) are taken from it once
per rate, its block boundaries are reproduced sample for sample, and
tests/perturbations/test_loudness.py checks the result against
``pyloudnorm.Meter.integrated_loudness`` on speech, tones, gated clips and
every supported rate to 0.01 LU (it agrees to ~1e-9 LU). Why our own loop-free
version: pyloudnorm 0.2 loops over blocks in Python and rebuilds the filter
coefficients on every call, 2-2.5 ms per 3 s clip at 16 kHz, as much as the
cheaper perturbations themselves; this one runs one ``scipy.signal.sosfilt``
and a cumulative sum (~0.4 ms). pyebur128 (libebur128) designs its filters
differently and reads up to ~0.05 LU apart at 16 kHz, so it was not used.

Gains are computed here rather than with ``pyloudnorm.normalize`` so that no
warning is raised and clipping is left to the caller to decide (jndlab never
clips silently; see ``perturbations.stimulus``).
"""

from __future__ import annotations

import functools

import numpy as np
import pyloudnorm
from scipy.signal import sosfilt

from perturbations.audio import SUPPORTED_SAMPLE_RATES

BLOCK_S = 0.4  # BS.1770 gating block: shorter clips cannot be measured
OVERLAP = 0.75  # BS.1770-4: blocks overlap by 75 %
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LOUDNESS_OFFSET_DB = -0.691  # BS.1770 eq. 2: the K-weighted 997 Hz sine calibration


@functools.cache
def _meter(sample_rate: int) -> pyloudnorm.Meter:
    # The reference meter, for its filter designs (and for tests comparing against it).
    return pyloudnorm.Meter(sample_rate, block_size=BLOCK_S, overlap=OVERLAP)


@functools.cache
def _k_weighting_sos(sample_rate: int) -> np.ndarray:
    """pyloudnorm's two K-weighting biquads at ``sample_rate`` as one (2, 6) second-order-section array."""
    sections = []
    for stage in _meter(sample_rate)._filters.values():  # high shelf, then high-pass
        b, a = stage.generate_coefficients()
        sections.append(np.concatenate([stage.passband_gain * b, a]))
    return np.array(sections, dtype=np.float64)  # private; scipy's sosfilt needs it writable


@functools.lru_cache(maxsize=64)
def _blocks(num_samples: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gating blocks of a clip, with pyloudnorm's exact float arithmetic for their bounds.

    Returns (edges, first, last): the sorted distinct block bounds in samples, and for
    every block the index in ``edges`` of its start and of its end. A block's energy
    is then a sum over the few segments between edges (no long cumulative sum).
    """
    step = 1.0 - OVERLAP
    duration_s = num_samples / sample_rate
    num_blocks = int(np.round((duration_s - BLOCK_S) / (BLOCK_S * step))) + 1
    j = np.arange(num_blocks, dtype=np.float64)
    lower = (BLOCK_S * (j * step) * sample_rate).astype(np.int64)
    upper = np.minimum((BLOCK_S * (j * step + 1) * sample_rate).astype(np.int64), num_samples)
    edges = np.unique(np.concatenate([lower, upper]))
    first, last = np.searchsorted(edges, lower), np.searchsorted(edges, upper)
    for array in (edges, first, last):
        array.setflags(write=False)
    return edges, first, last


def _check(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Rate, shape and length checks; returns float32 or float64 audio (no copy when it is already)."""
    if int(sample_rate) not in SUPPORTED_SAMPLE_RATES:
        raise ValueError(f"sample_rate {sample_rate!r} Hz is not supported; use one of {SUPPORTED_SAMPLE_RATES}")
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got shape {audio.shape}")
    if audio.shape[0] < BLOCK_S * sample_rate:
        raise ValueError(
            f"clip too short to measure loudness: {audio.shape[0] / sample_rate:.3f} s "
            f"< {BLOCK_S} s (one BS.1770 gating block)"
        )
    if audio.dtype != np.float32 and audio.dtype != np.float64:
        audio = audio.astype(np.float64)
    return audio


def _check_finite(audio: np.ndarray) -> None:
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples")


def loudness_lufs(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (BS.1770-4) of mono ``audio``, shape (samples,), in LUFS.

    Raises ValueError for an unsupported rate, non-mono or non-finite audio, a clip
    shorter than one 0.4 s block, or a silent clip (every block below -70 LUFS).
    """
    x = _check(audio, sample_rate)
    rate = int(sample_rate)
    # sosfilt filters a float64 copy of x (float32 converts exactly): no copy of our own
    weighted = sosfilt(_k_weighting_sos(rate), x)
    if not np.isfinite(weighted[-1]):
        # a NaN or inf sample makes every later output NaN (the filters feed back), so the
        # last output stands in for a pass over the whole input
        _check_finite(x)
        raise ValueError("audio too loud to measure: its K-weighted samples overflow float64")
    edges, first, last = _blocks(x.shape[0], rate)
    with np.errstate(over="ignore"):  # an overflow is caught just below, with a clearer message
        squared = np.square(weighted[: edges[-1]], out=weighted[: edges[-1]])
        segments = np.zeros(len(edges))
        segments[1:] = np.add.reduceat(squared, edges[:-1])[: len(edges) - 1]
        energy = np.cumsum(segments)  # energy up to each edge; a few dozen terms
    if not np.isfinite(energy[-1]):
        raise ValueError("audio too loud to measure: its K-weighted energy overflows float64")
    # mean square of each block (BS.1770 eq. 1; pyloudnorm divides by the nominal block length)
    z = np.maximum(energy[last] - energy[first], 0.0) / (BLOCK_S * rate)
    with np.errstate(divide="ignore"):
        block_lufs = LOUDNESS_OFFSET_DB + 10.0 * np.log10(z)
    above_absolute = block_lufs >= ABSOLUTE_GATE_LUFS
    if not above_absolute.any():
        raise ValueError("clip is silent: no block above the -70 LUFS absolute gate")
    relative_gate = LOUDNESS_OFFSET_DB + 10.0 * np.log10(np.mean(z[above_absolute])) + RELATIVE_GATE_LU
    gated = (block_lufs > relative_gate) & (block_lufs > ABSOLUTE_GATE_LUFS)
    if not gated.any():  # only blocks at exactly -70.000 LUFS: pyloudnorm reads -inf too
        raise ValueError("clip is silent: no block above the -70 LUFS absolute gate")
    return float(LOUDNESS_OFFSET_DB + 10.0 * np.log10(np.mean(z[gated])))


def loudness_lufs_pyloudnorm(audio: np.ndarray, sample_rate: int) -> float:
    """The same measurement through ``pyloudnorm.Meter.integrated_loudness`` (the reference; slower)."""
    x = _check(audio, sample_rate)
    _check_finite(x)
    value = float(_meter(int(sample_rate)).integrated_loudness(x.astype(np.float64)))
    if not np.isfinite(value):
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
