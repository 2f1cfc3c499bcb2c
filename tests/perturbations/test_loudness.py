"""BS.1770 loudness via pyloudnorm: a calibrated tone, matching, and bad clips."""
from __future__ import annotations

import numpy as np
import pytest

from perturbations.loudness import loudness_lufs, match_loudness, normalize_loudness


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_full_scale_997_hz_sine_reads_minus_3_lufs(rate):
    # BS.1770-4: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS. pyloudnorm designs its
    # own K-weighting filters per rate and reads 0.04 (48 kHz) to 0.07 LU (16 kHz) low.
    t = np.arange(rate * 2) / rate
    assert loudness_lufs(np.sin(2 * np.pi * 997 * t).astype(np.float32), rate) == pytest.approx(-3.01, abs=0.1)


def test_fixture_is_normalised(speech_16k, sample_rate):
    assert loudness_lufs(speech_16k, sample_rate) == pytest.approx(-23.0, abs=0.01)
    assert 2.0 <= len(speech_16k) / sample_rate <= 3.0


def test_match_and_normalize(speech_16k, sample_rate):
    quiet = (speech_16k * 0.1).astype(np.float32)
    assert loudness_lufs(quiet, sample_rate) == pytest.approx(-43.0, abs=0.01)
    assert loudness_lufs(match_loudness(quiet, -23.0, sample_rate), sample_rate) == pytest.approx(-23.0, abs=0.01)
    out = normalize_loudness(quiet, sample_rate, -16.0)
    assert out.dtype == np.float32 and loudness_lufs(out, sample_rate) == pytest.approx(-16.0, abs=0.01)


def test_bad_clips_raise_clear_errors(sample_rate):
    with pytest.raises(ValueError, match="too short to measure loudness: 0.300 s < 0.4 s"):
        loudness_lufs(np.ones(int(0.3 * sample_rate), np.float32) * 0.1, sample_rate)
    with pytest.raises(ValueError, match="silent"):
        loudness_lufs(np.zeros(sample_rate, np.float32), sample_rate)
    with pytest.raises(ValueError, match="not supported"):
        loudness_lufs(np.ones(sample_rate, np.float32), 8000)
    with pytest.raises(ValueError, match="NaN"):
        loudness_lufs(np.full(sample_rate, np.nan, np.float32), sample_rate)
    with pytest.raises(ValueError, match="mono"):
        loudness_lufs(np.ones((2, sample_rate), np.float32), sample_rate)
    with pytest.raises(ValueError, match="reference_lufs must be finite"):
        match_loudness(np.ones(sample_rate, np.float32) * 0.1, float("-inf"), sample_rate)
