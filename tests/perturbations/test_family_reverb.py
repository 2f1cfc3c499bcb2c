"""Reverb: measured RT60 stored, exact DRR, deterministic ray tracing, user RIR folders."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from perturbations.families.reverb import DIRECT_HALF_WINDOW_S, ReverbFamily, measure_rt60_s, shape_rir, shoebox_rir


def decaying_rir(rt60_s, sample_rate, rng, delay=200):
    t = np.arange(int(rt60_s * sample_rate * 1.5)) / sample_rate
    rir = rng.standard_normal(t.size) * 10 ** (-3 * t / rt60_s)  # -60 dB at rt60_s
    return np.concatenate([np.zeros(delay), [8.0], 0.3 * rir])


@pytest.mark.parametrize("rt60_s", [0.3, 0.8, 1.5])
def test_measure_rt60_on_a_known_decay(rt60_s, sample_rate):
    rir = decaying_rir(rt60_s, sample_rate, np.random.default_rng(0))
    assert measure_rt60_s(rir, sample_rate) == pytest.approx(rt60_s, rel=0.1)


@pytest.mark.parametrize("level", [0, 50, 100])
def test_simulated_rooms_record_a_measured_rt60_near_target(level, sample_rate):
    params = ReverbFamily().sample_params(
        level, np.random.default_rng(level), sample_rate=sample_rate, num_samples=sample_rate
    )
    assert params["rir"] == "shoebox"
    assert params["rt60_s"] == pytest.approx(params["rt60_target_s"], rel=0.25)
    assert params["rt60_s"] != params["rt60_target_s"]  # measured, not copied


def test_ray_tracing_is_deterministic_despite_global_generators(sample_rate):
    import pyroomacoustics as pra

    key = (sample_rate, 0.9, (5.0, 4.0, 3.0), (1.5, 2.8, 1.6), (3.4, 1.9, 1.5), 3)
    first = shoebox_rir(*key)[0].copy()
    shoebox_rir.cache_clear()
    pra.random.seed(numpy=123, libroom=456)  # someone else disturbs the global state
    assert np.array_equal(shoebox_rir(*key)[0], first)


def test_shaped_rir_has_exact_drr(sample_rate):
    rir = decaying_rir(0.5, sample_rate, np.random.default_rng(1))
    shaped = shape_rir(rir, 200, sample_rate, drr_db=3.0)
    half = int(round(DIRECT_HALF_WINDOW_S * sample_rate))
    direct = np.sum(shaped[200 - half : 200 + half + 1] ** 2)
    assert shaped[200] == 1.0
    assert 10 * np.log10(direct / (np.sum(shaped**2) - direct)) == pytest.approx(3.0, abs=1e-9)


def test_user_rir_folder(tmp_path, speech_16k, sample_rate):
    rng = np.random.default_rng(2)
    sf.write(tmp_path / "hall.wav", decaying_rir(1.0, 48000, rng).astype(np.float32) / 10, 48000)
    sf.write(tmp_path / "booth.wav", decaying_rir(0.3, 16000, rng).astype(np.float32) / 10, 16000)
    family = ReverbFamily(rir_dir=tmp_path)
    seen = set()
    for seed in range(6):
        out, params = family(speech_16k, sample_rate, 70, np.random.default_rng(seed))
        seen.add(params["rir_file"])
        expected = 1.0 if params["rir_file"] == "hall.wav" else 0.3
        assert params["rt60_s"] == pytest.approx(expected, rel=0.15)
        assert (
            out.shape == speech_16k.shape and int(np.argmax(np.correlate(out[:4000], speech_16k[:2000], "valid"))) == 0
        )
    assert seen == {"hall.wav", "booth.wav"}


def test_bad_rir_dir(tmp_path):
    with pytest.raises(ValueError, match="holds no audio files"):
        ReverbFamily(rir_dir=tmp_path)
