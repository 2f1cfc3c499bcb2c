"""Synthetic coloured noise, drawn from an explicit generator.

The colours follow their power spectral density slope: white (flat),
pink (1/f), brown (1/f^2), blue (f), violet (f^2). Noise is shaped in the
frequency domain and scaled to unit RMS, so an SNR maps directly to a gain.

Shaped noise is band-limited to the audible range: nothing below ``LOWEST_HZ``.
A 1/f law taken down to the lowest FFT bin would put most of brown noise's power
below 20 Hz, where nobody hears it, and a power-based SNR would overstate its
audibility. (White noise has a negligible share there and skips the FFT.)
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

# exponent of the power spectral density, PSD ∝ f**exponent
PSD_EXPONENT = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0, "violet": 2.0}
COLORS = tuple(PSD_EXPONENT)
LOWEST_HZ = 20.0


def colored_noise(color: str, num_samples: int, rng: np.random.Generator, *, sample_rate: int) -> np.ndarray:
    """Unit-RMS float32 noise of ``color`` with ``num_samples`` samples at ``sample_rate`` Hz."""
    if color not in PSD_EXPONENT:
        raise ValueError(f"unknown noise colour {color!r}; choose one of {', '.join(COLORS)}")
    if num_samples < 2:
        raise ValueError(f"num_samples must be at least 2, got {num_samples}")
    # float32 draws and FFTs (the output is float32): about half the CPU of float64
    white = rng.standard_normal(num_samples, dtype=np.float32)
    exponent = PSD_EXPONENT[color]
    if exponent == 0.0:
        shaped = white
    else:
        spectrum = scipy.fft.rfft(white)
        spectrum *= _shaping_gains(exponent, num_samples, int(sample_rate))
        shaped = scipy.fft.irfft(spectrum, n=num_samples)
    shaped = shaped - np.float32(shaped.mean(dtype=np.float64))
    return (shaped * np.float32(1.0 / np.sqrt(np.mean(np.square(shaped, dtype=np.float64))))).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _shaping_gains(exponent: float, num_samples: int, sample_rate: int) -> np.ndarray:
    """Amplitude gain per rfft bin (∝ sqrt(PSD), zero below LOWEST_HZ); cached: a ladder reuses it."""
    freqs_hz = np.fft.rfftfreq(num_samples, d=1.0 / sample_rate)
    audible = freqs_hz >= LOWEST_HZ
    if not audible.any():
        raise ValueError(
            f"{num_samples} samples at {sample_rate} Hz are too few to hold any frequency above {LOWEST_HZ:g} Hz"
        )
    gains = np.zeros_like(freqs_hz)
    gains[audible] = (freqs_hz[audible] / sample_rate) ** (exponent / 2.0)  # amplitude ∝ sqrt(PSD)
    gains = gains.astype(np.float32)
    gains.setflags(write=False)
    return gains
