"""Synthetic coloured noise, drawn from an explicit generator.

The colours follow their power spectral density slope: white (flat),
pink (1/f), brown (1/f^2), blue (f), violet (f^2). Noise is shaped in the
frequency domain and scaled to unit RMS, so an SNR maps directly to a gain.
"""
from __future__ import annotations

import numpy as np

# exponent of the power spectral density, PSD ∝ f**exponent
PSD_EXPONENT = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0, "violet": 2.0}
COLORS = tuple(PSD_EXPONENT)


def colored_noise(color: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS float32 noise of ``color`` with ``num_samples`` samples."""
    if color not in PSD_EXPONENT:
        raise ValueError(f"unknown noise colour {color!r}; choose one of {', '.join(COLORS)}")
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    white = rng.standard_normal(num_samples)
    exponent = PSD_EXPONENT[color]
    if exponent == 0.0:
        shaped = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(num_samples)
        freqs[0] = freqs[1]  # no infinite gain at DC for pink and brown
        spectrum *= freqs ** (exponent / 2.0)  # amplitude ∝ sqrt(PSD)
        spectrum[0] = 0.0  # zero mean
        shaped = np.fft.irfft(spectrum, n=num_samples)
    shaped = shaped - shaped.mean()
    return (shaped / np.sqrt(np.mean(shaped**2))).astype(np.float32)
