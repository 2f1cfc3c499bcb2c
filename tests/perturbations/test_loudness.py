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


# --- the vectorised meter against pyloudnorm (the reference implementation) -------------------


def _clips_at(rate: int, speech_16k: np.ndarray) -> dict[str, np.ndarray]:
    """Speech, tones, noise and clips the gates act on, at ``rate``, of lengths that are not whole blocks."""
    from perturbations.audio import resample

    speech = resample(speech_16k, 16000, rate)
    rng = np.random.default_rng(rate)
    t = np.arange(int(1.37 * rate)) / rate
    return {
        "speech": speech,
        "speech, odd length": speech[: len(speech) - 337],
        "speech then a quiet tail (relative gate)": np.concatenate([speech, 0.003 * speech]),
        "speech, silence, speech (absolute gate)": np.concatenate([speech, np.zeros(rate, np.float32), speech * 0.5]),
        "one block and a bit": speech[: int(0.41 * rate)],
        "40 Hz tone (high-pass)": (0.5 * np.sin(2 * np.pi * 40 * t)).astype(np.float32),
        "8 kHz-ish tone (shelf)": (0.1 * np.sin(2 * np.pi * min(8000, rate / 2 - 500) * t)).astype(np.float32),
        "white noise": (0.05 * rng.standard_normal(int(2.2 * rate))).astype(np.float32),
        "near the -70 LUFS gate": (speech * 10 ** (-45 / 20)).astype(np.float32),
    }


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_meter_agrees_with_pyloudnorm_to_0_01_lu(rate, speech_16k):
    import pyloudnorm

    meter = pyloudnorm.Meter(rate)  # BS.1770-4 defaults: 400 ms blocks, 75 % overlap, K-weighting
    for name, clip in _clips_at(rate, speech_16k).items():
        expected = meter.integrated_loudness(clip.astype(np.float64))
        assert np.isfinite(expected), name
        assert loudness_lufs(clip, rate) == pytest.approx(expected, abs=0.01), name


def test_meter_gates_like_pyloudnorm(speech_16k, sample_rate):
    # The gates must drop the same blocks: a quiet tail changes the ungated mean by several LU.
    import pyloudnorm

    quiet_tail = np.concatenate([speech_16k, 0.003 * speech_16k, np.zeros(sample_rate, np.float32)])
    ungated = -0.691 + 10 * np.log10(
        np.mean(
            pyloudnorm.Meter(sample_rate)
            ._filters["high_pass"]
            .apply_filter(
                pyloudnorm.Meter(sample_rate)._filters["high_shelf"].apply_filter(quiet_tail.astype(np.float64))
            )
            ** 2
        )
    )
    gated = loudness_lufs(quiet_tail, sample_rate)
    assert gated - ungated > 2.0  # the tail and the silence were gated out
    assert gated == pytest.approx(
        pyloudnorm.Meter(sample_rate).integrated_loudness(quiet_tail.astype(np.float64)), abs=0.01
    )


def test_a_bad_sample_anywhere_raises_even_after_the_last_block(sample_rate):
    # the meter checks finiteness through the filtered clip's last sample: a NaN or inf past the
    # last gating block (which no block measures) must still raise
    clip = (0.1 * np.sin(2 * np.pi * 440 * np.arange(int(1.05 * sample_rate)) / sample_rate)).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, len(clip) // 2, len(clip) - 1):
            broken = clip.copy()
            broken[where] = bad
            with pytest.raises(ValueError, match="NaN or infinite"):
                loudness_lufs(broken, sample_rate)
    with pytest.raises(ValueError, match="too loud to measure"):
        loudness_lufs(clip.astype(np.float64) * 1e300, sample_rate)


def test_meter_reads_float32_float64_and_integer_audio_alike(speech_16k, sample_rate):
    as_int16 = np.round(speech_16k * 32767).astype(np.int16)
    expected = loudness_lufs(as_int16.astype(np.float64), sample_rate)
    assert loudness_lufs(as_int16, sample_rate) == expected
    assert loudness_lufs(speech_16k, sample_rate) == loudness_lufs(speech_16k.astype(np.float64), sample_rate)
