"""One stimulus: perturb a reference, then match its loudness to the reference.

``make_stimulus`` is the pure function of (reference, family, level, seed) that
the engine calls once per manifest row; ``regenerate`` rebuilds the same audio
from the row's params without drawing any random number.

Never clip. After loudness matching the stimulus may in principle exceed full
scale (|x| > 1). jndlab does not clip, limit or renormalise it (either would be
a second, unrecorded perturbation and would undo the loudness match); instead
``make_stimulus`` raises ``HeadroomError`` naming the peak, and the params of
every stimulus record ``peak_dbfs``. References normalised to -23 LUFS (EBU
R128; ``perturbations.loudness.normalize_loudness``) keep speech peaks near
-10 dBFS, leaving ample headroom for every family's ladder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perturbations.base import Family, check_level
from perturbations.families import check_audio
from perturbations.loudness import loudness_lufs

FULL_SCALE = 1.0
# keys make_stimulus adds beside the family's own params; regenerate strips them
STIMULUS_KEYS = ("loudness_lufs", "loudness_gain_db", "peak_dbfs")


class HeadroomError(ValueError):
    """The loudness-matched stimulus would exceed full scale; the reference needs more headroom."""

    def __init__(self, message: str, peak_dbfs: float):
        super().__init__(message)
        self.peak_dbfs = peak_dbfs  # how far above full scale the matched stimulus would peak


def _match(
    family: Family, reference: np.ndarray, sample_rate: int, perturbed: np.ndarray, reference_lufs: float | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    target_lufs = loudness_lufs(reference, sample_rate) if reference_lufs is None else float(reference_lufs)
    try:
        gain_db = target_lufs - loudness_lufs(perturbed, sample_rate)
    except ValueError as error:
        raise ValueError(f"{family.name}: the perturbed clip cannot be loudness-matched: {error}") from None
    gain = 10.0 ** (gain_db / 20.0)
    # float64 products rounded to float32 (the ufunc buffers the cast: no float64 copy of the clip)
    matched = np.multiply(
        perturbed, gain, dtype=np.float64, out=np.empty(perturbed.shape, np.float32), casting="unsafe"
    )
    # rounding is monotonic and symmetric, so the matched peak is the rounded product of the
    # perturbed peak (two passes without a temporary instead of np.abs over the matched clip)
    peak = float(np.float32(max(float(perturbed.max()), -float(perturbed.min())) * gain))
    if peak > FULL_SCALE:
        raise HeadroomError(
            f"{family.name}: the loudness-matched stimulus peaks at {20 * np.log10(peak):+.2f} dBFS and would clip; "
            f"give the reference at least {20 * np.log10(peak):.2f} dB more headroom (e.g. normalise it to -23 LUFS)",
            peak_dbfs=float(20 * np.log10(peak)),
        )
    with np.errstate(divide="ignore"):
        peak_dbfs = float(20.0 * np.log10(peak))
    return matched, {"loudness_lufs": float(target_lufs), "loudness_gain_db": float(gain_db), "peak_dbfs": peak_dbfs}


def make_stimulus(
    family: Family,
    reference: np.ndarray,
    sample_rate: int,
    level: float,
    seed: int,
    *,
    reference_lufs: float | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Perturb ``reference`` at ``level`` with ``np.random.default_rng(seed)`` and loudness-match it.

    Returns float32 audio of the reference's length, sample-aligned, at the
    reference's integrated loudness (BS.1770), and the JSON-serialisable params:
    the family's params plus loudness_lufs, loudness_gain_db and peak_dbfs.
    Raises ValueError for bad input and HeadroomError rather than clip.

    ``reference_lufs``: the reference's loudness when the caller already measured it
    (the engine does, once per reference): saves a BS.1770 pass per stimulus.
    """
    reference = check_audio(reference, sample_rate)
    check_level(level)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    perturbed, params = family(reference, sample_rate, level, rng)
    clash = [k for k in STIMULUS_KEYS if k in params]
    if clash:
        raise ValueError(f"{family.name}: family params may not use the reserved keys {clash}")
    matched, loudness = _match(family, reference, sample_rate, perturbed, reference_lufs)
    return matched, {**params, **loudness}


def regenerate(family: Family, reference: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
    """Rebuild a stimulus from stored ``params`` (no random draws); identical to ``make_stimulus``."""
    reference = check_audio(reference, sample_rate)
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    family_params = {k: v for k, v in params.items() if k not in STIMULUS_KEYS}
    perturbed = family.apply(reference, sample_rate, family_params)
    # the stored target loudness, so the audio is a function of the row alone
    return _match(family, reference, sample_rate, perturbed, params.get("loudness_lufs"))[0]
