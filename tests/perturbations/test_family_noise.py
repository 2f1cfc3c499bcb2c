"""Noise: realised SNR, colours, babble/user noise folders, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from perturbations.families.noise import NoiseFamily
from perturbations.noises import COLORS
from perturbations.registry import get_family


def realised_snr_db(clean, noisy):
    clean = clean.astype(np.float64)
    return 10 * np.log10(np.mean(clean**2) / np.mean((noisy.astype(np.float64) - clean) ** 2))


@pytest.mark.parametrize("color", COLORS)
@pytest.mark.parametrize("level", [0, 30, 70, 100])
def test_realised_snr_matches_params(color, level, speech_16k, sample_rate):
    out, params = NoiseFamily(noise_types=[color])(speech_16k, sample_rate, level, np.random.default_rng(level))
    assert params["noise_type"] == color
    assert abs(realised_snr_db(speech_16k, out) - params["snr_db"]) < 0.2


@pytest.fixture
def noise_dir(tmp_path, speech_16k):
    # a "babble" file at 22.05 kHz (resampled on use) and a short user noise that must loop
    rng = np.random.default_rng(5)
    babble = np.concatenate([speech_16k[::-1], speech_16k]) + 0.5 * np.roll(speech_16k, 4000).repeat(2)
    sf.write(tmp_path / "babble.wav", (babble * 0.5).astype(np.float32), 22050)
    sf.write(tmp_path / "hum.flac", (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    return tmp_path


@pytest.mark.parametrize("noise_type", ["babble", "hum"])
def test_noise_folder_files(noise_type, noise_dir, speech_16k, sample_rate):
    family = get_family("noise", noise_dir=noise_dir, noise_types=(noise_type,))
    out, params = family(speech_16k, sample_rate, 80, np.random.default_rng(2))
    assert params["noise_file"].startswith(noise_type) and "noise_seed" not in params
    assert params["offset_samples"] >= 0
    assert abs(realised_snr_db(speech_16k, out) - params["snr_db"]) < 0.2
    assert family.apply(speech_16k, sample_rate, params).tobytes() == out.tobytes()


def test_default_types_include_folder_files_and_colours(noise_dir):
    assert set(NoiseFamily(noise_dir=noise_dir).noise_types) == set(COLORS) | {"babble", "hum"}
    assert set(NoiseFamily().noise_types) == set(COLORS)


def test_different_seeds_draw_different_noise(speech_16k, sample_rate):
    family = NoiseFamily(noise_types=["pink"])
    a, _ = family(speech_16k, sample_rate, 50, np.random.default_rng(1))
    b, _ = family(speech_16k, sample_rate, 50, np.random.default_rng(2))
    assert not np.array_equal(a, b)


def test_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown noise type.*babble.*noise_dir"):
        NoiseFamily(noise_types=["babble"])
    with pytest.raises(ValueError, match="is not a folder"):
        NoiseFamily(noise_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no audio files"):
        NoiseFamily(noise_dir=tmp_path)


def test_silent_clip_raises(sample_rate):
    with pytest.raises(ValueError, match="silent"):
        NoiseFamily()(np.zeros(sample_rate, np.float32), sample_rate, 50, np.random.default_rng(0))
