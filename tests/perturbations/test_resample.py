"""perturbations.audio.resample: the one resampler."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from perturbations.audio import resample


@pytest.mark.parametrize(
    ("rate_from", "rate_to", "up", "down"), [(22050, 16000, 320, 441), (16000, 48000, 3, 1), (44100, 22050, 1, 2)]
)
def test_matches_scipy_polyphase_in_float64(rate_from, rate_to, up, down):
    audio = np.random.default_rng(0).standard_normal(rate_from // 10).astype(np.float32)
    out = resample(audio, rate_from, rate_to)
    assert out.dtype == np.float32
    assert out.shape == (int(np.ceil(len(audio) * rate_to / rate_from)),)
    np.testing.assert_array_equal(out, resample_poly(audio.astype(np.float64), up, down).astype(np.float32))


def test_keeps_a_tone_s_frequency():
    t = np.arange(44100) / 44100
    out = resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), 44100, 16000)
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) * 16000 / len(out) == pytest.approx(1000, abs=1)


def test_batches_along_the_last_axis():
    batch = np.random.default_rng(1).standard_normal((3, 2205)).astype(np.float32)
    out = resample(batch, 22050, 16000)
    assert out.shape == (3, 1600)
    np.testing.assert_array_equal(out[1], resample(batch[1], 22050, 16000))


def test_equal_rates_give_an_unchanged_float32_copy():
    audio = np.arange(5, dtype=np.float64)
    out = resample(audio, 16000, 16000)
    assert out.dtype == np.float32 and np.array_equal(out, audio) and not np.shares_memory(out, audio)


@pytest.mark.parametrize(("rate_from", "rate_to"), [(0, 16000), (16000, -1), (16000.5, 16000)])
def test_refuses_rates_that_are_not_positive_integers(rate_from, rate_to):
    with pytest.raises(ValueError, match="positive integers"):
        resample(np.zeros(10, np.float32), rate_from, rate_to)


def test_float64_out_keeps_scipy_s_float64_result():
    rir = np.random.default_rng(2).standard_normal(4410)
    out = resample(rir, 44100, 16000, dtype=np.float64)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, resample_poly(rir, 160, 441))
