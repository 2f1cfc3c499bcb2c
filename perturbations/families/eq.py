"""Three-band equaliser (bands split at 500 Hz and 1 kHz, as in DPAM), zero-phase."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from perturbations.base import Family, Parameter, linear
from perturbations.families import check_audio, param
from perturbations.families.lowpass import bin_frequencies_hz, butterworth_power, fft_length, filter_spectrum

SPLIT_LOW_HZ = 500.0
SPLIT_HIGH_HZ = 1000.0
MAX_GAIN_DB = 15.0  # per-band |gain| at level 100
SPLIT_ORDER = 4  # power-complementary Butterworth split (24 dB/oct per band edge)
BANDS = ("low", "mid", "high")


def band_weights(freqs_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-phase weights of the three bands; they sum to exactly 1 at every frequency."""
    low = butterworth_power(freqs_hz, SPLIT_LOW_HZ, SPLIT_ORDER)
    high = 1.0 - butterworth_power(freqs_hz, SPLIT_HIGH_HZ, SPLIT_ORDER)
    mid = 1.0 - low - high  # >= 0 because the splits are an octave apart
    return low, mid, high


class EqFamily(Family):
    name = "eq"
    category = "filter"
    description = "Three-band EQ (<500 Hz, 500 Hz-1 kHz, >1 kHz) with random signs, zero-phase."
    parameters = tuple(
        Parameter(
            f"gain_{band}_db",
            0.0,
            f"±{MAX_GAIN_DB:g}",
            f"gain of the {band} band; magnitude linear in level, sign random",
        )
        for band in BANDS
    )

    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        magnitude_db = linear(level, 0.0, MAX_GAIN_DB)
        signs = rng.choice([-1.0, 1.0], size=len(BANDS))
        if np.all(signs == signs[0]):
            # Equal signs are a plain volume change that loudness matching would undo.
            signs[rng.integers(len(BANDS))] *= -1.0
        return {f"gain_{band}_db": float(s * magnitude_db) for band, s in zip(BANDS, signs)}

    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        audio = check_audio(audio, sample_rate)
        gains = [10.0 ** (param(params, f"gain_{b}_db", self.name, low=-60.0, high=60.0) / 20.0) for b in BANDS]
        n_fft = fft_length(audio.shape[0], sample_rate)
        low, mid, high = _band_weights_at(n_fft, int(sample_rate))
        response = gains[0] * low
        response += gains[1] * mid
        response += gains[2] * high
        return filter_spectrum(audio, n_fft, response)


@functools.lru_cache(maxsize=16)
def _band_weights_at(n_fft: int, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``band_weights`` at the bins of an ``n_fft``-point rfft, read-only: every level of a clip shares them."""
    weights = band_weights(bin_frequencies_hz(n_fft, sample_rate))
    for w in weights:
        w.setflags(write=False)
    return weights
