"""An MP3 stimulus row names its encoder and LAME quality, and regeneration honours them."""

from __future__ import annotations

import numpy as np
import pytest

from perturbations.families.mp3 import LAME_QUALITY, Mp3Family


@pytest.fixture
def tone() -> np.ndarray:
    t = np.arange(16000) / 16000
    return (0.2 * np.sin(2 * np.pi * 440 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_params_record_encoder_and_quality():
    rng = np.random.default_rng(0)
    params = Mp3Family().sample_params(60, rng, sample_rate=16000, num_samples=16000)
    assert params["encoder"] == "lameenc" and params["lame_quality"] == LAME_QUALITY
    other = Mp3Family(backend="libsndfile").sample_params(60, rng, sample_rate=16000, num_samples=16000)
    assert other["encoder"] == "libsndfile" and "lame_quality" not in other


def test_regeneration_uses_the_recorded_encoder(tone):
    rng = np.random.default_rng(0)
    row = Mp3Family(backend="libsndfile").sample_params(80, rng, sample_rate=16000, num_samples=tone.size)
    by_libsndfile = Mp3Family(backend="libsndfile").apply(tone, 16000, row)
    # a default (lameenc) instance rebuilding the row must use the row's encoder, not its own
    assert np.array_equal(Mp3Family().apply(tone, 16000, row), by_libsndfile)
    lame_row = {**row, "encoder": "lameenc", "lame_quality": LAME_QUALITY}
    assert not np.array_equal(Mp3Family().apply(tone, 16000, lame_row), by_libsndfile)


def test_recorded_quality_changes_the_stream_and_is_checked(tone):
    family = Mp3Family()
    row = family.sample_params(80, np.random.default_rng(0), sample_rate=16000, num_samples=tone.size)
    q7 = family.apply(tone, 16000, row)
    assert np.array_equal(family.apply(tone, 16000, {**row, "lame_quality": LAME_QUALITY}), q7)
    q0 = family.apply(tone, 16000, {**row, "lame_quality": 0})
    assert q0.shape == q7.shape and not np.array_equal(q0, q7)
    with pytest.raises(ValueError, match="lame_quality"):
        family.apply(tone, 16000, {**row, "lame_quality": 12})
    with pytest.raises(ValueError, match="unknown encoder"):
        family.apply(tone, 16000, {**row, "encoder": "opus"})
