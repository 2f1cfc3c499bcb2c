"""Coloured noise: spectral slope, the flat region below 20 Hz, unit RMS, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from perturbations.noises import COLORS, LOWEST_HZ, PSD_EXPONENT, colored_noise

SAMPLE_RATE = 16000


def psd(color: str, seconds: float = 20.0, nperseg: int = 16384):
    noise = colored_noise(color, int(seconds * SAMPLE_RATE), np.random.default_rng(1), sample_rate=SAMPLE_RATE)
    return welch(noise.astype(np.float64), fs=SAMPLE_RATE, nperseg=nperseg)


@pytest.mark.parametrize("color", COLORS)
def test_slope_matches_the_colour_above_20_hz(color):
    freqs, power = psd(color)
    band = (freqs >= 50) & (freqs <= 4000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
    assert abs(slope - PSD_EXPONENT[color]) < 0.1


@pytest.mark.parametrize("color", ["pink", "brown"])
def test_little_power_below_the_audible_range(color):
    # shaped noise stops at 20 Hz, so sub-audible rumble cannot dominate the power (and the SNR)
    freqs, power = psd(color)
    below = power[freqs < LOWEST_HZ - 2].sum()  # Welch's window leaks a little across the edge
    assert below / power.sum() < 0.01


@pytest.mark.parametrize("color", COLORS)
def test_unit_rms_zero_mean_and_deterministic(color):
    a = colored_noise(color, 8000, np.random.default_rng(5), sample_rate=SAMPLE_RATE)
    b = colored_noise(color, 8000, np.random.default_rng(5), sample_rate=SAMPLE_RATE)
    assert a.dtype == np.float32 and a.shape == (8000,)
    assert np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(a.mean())) < 1e-5
    np.testing.assert_array_equal(a, b)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown noise colour 'grey'"):
        colored_noise("grey", 100, np.random.default_rng(0), sample_rate=SAMPLE_RATE)
    with pytest.raises(ValueError, match="num_samples must be at least 2"):
        colored_noise("white", 1, np.random.default_rng(0), sample_rate=SAMPLE_RATE)
