"""Low-pass band limitation, zero-phase so the output stays sample-aligned."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft, rfftfreq

from perturbations.base import Family, Parameter, geometric
from perturbations.families import check_audio, param

CUTOFF_AT_100_HZ = 250.0
NYQUIST_FRACTION_AT_0 = 0.95
ORDER = 8  # |H|^2 of an 8th-order Butterworth = a 4th-order one run forward and back: 48 dB/oct


def zero_phase_gain(audio: np.ndarray, sample_rate: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Multiply the spectrum by a real, non-negative ``gain(freqs_hz)``: a zero-phase filter.

    The clip is zero-padded by 0.2 s so the filter's (short) impulse response
    does not wrap around the circular FFT convolution into the kept part.
    ``gain`` gets the bin frequencies of ``bin_frequencies_hz(fft_length(n, rate), rate)``.
    """
    n_fft = fft_length(audio.shape[0], sample_rate)
    return filter_spectrum(audio, n_fft, gain(bin_frequencies_hz(n_fft, int(sample_rate))))


def fft_length(num_samples: int, sample_rate: int) -> int:
    """The FFT length of ``zero_phase_gain``: the clip plus 0.2 s of zeros, rounded up to a fast size."""
    return _fft_length(int(num_samples), int(sample_rate))


@functools.lru_cache(maxsize=64)
def _fft_length(num_samples: int, sample_rate: int) -> int:
    return int(next_fast_len(num_samples + sample_rate // 5, real=True))


def filter_spectrum(audio: np.ndarray, n_fft: int, gains: np.ndarray) -> np.ndarray:
    """Zero-pad ``audio`` to ``n_fft``, multiply its float64 rfft by ``gains`` (shape (n_fft // 2 + 1,)),
    and return the first ``len(audio)`` samples of the inverse as float32."""
    n = audio.shape[0]
    padded = np.zeros(n_fft)
    padded[:n] = audio  # one float64 copy, already padded (rfft would pad a copy of its own)
    spectrum = rfft(padded, overwrite_x=True)
    spectrum *= gains
    return irfft(spectrum, n_fft, overwrite_x=True)[:n].astype(np.float32)


@functools.lru_cache(maxsize=16)
def bin_frequencies_hz(n_fft: int, sample_rate: int) -> np.ndarray:
    """Read-only rfft bin frequencies (Hz) of an ``n_fft``-point transform; cached."""
    freqs_hz = rfftfreq(n_fft, 1.0 / sample_rate)
    freqs_hz.setflags(write=False)
    return freqs_hz


def butterworth_power(freqs_hz: np.ndarray, cutoff_hz: float, order: int = ORDER) -> np.ndarray:
    """|H(f)|^2 of a Butterworth low-pass: 1 / (1 + (f/fc)^(2·order)); -6 dB at the cutoff."""
    power = np.asarray(freqs_hz, dtype=np.float64) / cutoff_hz  # a new array: worked on in place
    exponent = 2 * int(order)
    if exponent & (exponent - 1) == 0 and exponent == 2 * order:  # a power of two: square repeatedly,
        while exponent > 1:  # ~20x faster than the general pow() per bin
            np.multiply(power, power, out=power)
            exponent //= 2
    else:
        np.power(power, 2 * order, out=power)
    power += 1.0
    return np.divide(1.0, power, out=power)


class LowpassFamily(Family):
    name = "lowpass"
    category = "filter"
    description = "Zero-phase low-pass (Butterworth-squared, 48 dB/octave), cutoff falling geometrically."
    parameters = (
        Parameter(
            "cutoff_hz",
            f"{NYQUIST_FRACTION_AT_0:g} x Nyquist",
            CUTOFF_AT_100_HZ,
            "-6 dB point of the zero-phase low-pass, geometric in level",
        ),
    )

    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        at_0 = NYQUIST_FRACTION_AT_0 * sample_rate / 2.0
        return {"cutoff_hz": geometric(level, at_0, CUTOFF_AT_100_HZ)}

    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        audio = check_audio(audio, sample_rate)
        cutoff_hz = param(params, "cutoff_hz", self.name, low=20.0, high=sample_rate / 2.0)
        return zero_phase_gain(audio, sample_rate, lambda f: butterworth_power(f, cutoff_hz))
