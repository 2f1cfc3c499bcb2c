"""make_stimulus / regenerate: loudness matching, reproducibility, headroom."""

from __future__ import annotations

import json

import numpy as np
import pytest

from perturbations.loudness import loudness_lufs
from perturbations.registry import available_families, get_family
from perturbations.stimulus import HeadroomError, make_stimulus, regenerate

FAMILIES = available_families()


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("level", [0, 50, 100])
def test_loudness_matches_the_reference(name, level, speech_16k, sample_rate):
    out, params = make_stimulus(get_family(name), speech_16k, sample_rate, level, seed=3)
    assert out.dtype == np.float32 and out.shape == speech_16k.shape
    assert abs(loudness_lufs(out, sample_rate) - loudness_lufs(speech_16k, sample_rate)) < 0.5
    assert params["peak_dbfs"] <= 0.0 and np.max(np.abs(out)) <= 1.0
    assert params["loudness_lufs"] == pytest.approx(-23.0, abs=0.01)


@pytest.mark.parametrize("name", FAMILIES)
def test_regenerate_equals_make_stimulus(name, speech_16k, sample_rate):
    family = get_family(name)
    out, params = make_stimulus(family, speech_16k, sample_rate, 65, seed=21)
    stored = json.loads(json.dumps(params))  # as read back from manifest.csv
    assert regenerate(get_family(name), speech_16k, sample_rate, stored).tobytes() == out.tobytes()


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_same_bytes(name, speech_16k, sample_rate):
    a, pa = make_stimulus(get_family(name), speech_16k, sample_rate, 40, seed=5)
    b, pb = make_stimulus(get_family(name), speech_16k, sample_rate, 40, seed=5)
    assert a.tobytes() == b.tobytes() and pa == pb


def test_different_seeds_differ_for_random_families(speech_16k, sample_rate):
    for name in ("noise", "eq", "chain"):
        a, _ = make_stimulus(get_family(name), speech_16k, sample_rate, 40, seed=5)
        b, _ = make_stimulus(get_family(name), speech_16k, sample_rate, 40, seed=6)
        assert a.tobytes() != b.tobytes(), name


def test_chain_params_record_order_and_members(speech_16k, sample_rate):
    _, params = make_stimulus(get_family("chain"), speech_16k, sample_rate, 50, seed=9)
    categories = [get_family(m["family"]).category for m in params["members"]]
    assert [m["family"] for m in params["members"]] == params["order"]
    assert sorted(categories[:4]) == sorted(
        ["noise", "room", "codec", next(c for c in categories if c in ("filter", "distortion"))]
    )
    orders = {
        tuple(make_stimulus(get_family("chain"), speech_16k, sample_rate, 50, seed=s)[1]["order"]) for s in range(6)
    }
    assert len(orders) > 1  # the order is random


def test_headroom_error_instead_of_clipping(sample_rate):
    # a near-full-scale tone (crest 3 dB) buried in loudness-matched Gaussian noise must peak above 0 dBFS
    tone = (0.99 * np.sin(2 * np.pi * 440 * np.arange(sample_rate) / sample_rate)).astype(np.float32)
    with pytest.raises(HeadroomError, match=r"noise: the loudness-matched stimulus peaks at \+\d+\.\d+ dBFS"):
        make_stimulus(get_family("noise", noise_types=["white"]), tone, sample_rate, 100, seed=0)
    quiet = (tone * 0.1).astype(np.float32)  # 20 dB of headroom is enough
    out, params = make_stimulus(get_family("noise", noise_types=["white"]), quiet, sample_rate, 100, seed=0)
    assert params["peak_dbfs"] == pytest.approx(20 * np.log10(np.max(np.abs(out))))


def test_bad_arguments_raise(speech_16k, sample_rate):
    family = get_family("noise")
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        make_stimulus(family, speech_16k, sample_rate, 10, seed=-1)
    with pytest.raises(ValueError, match="seed must be"):
        make_stimulus(family, speech_16k, sample_rate, 10, seed=1.5)
    with pytest.raises(ValueError, match="level must lie in"):
        make_stimulus(family, speech_16k, sample_rate, 101, seed=1)
    with pytest.raises(ValueError, match="not supported"):
        make_stimulus(family, speech_16k, 8000, 10, seed=1)
    with pytest.raises(ValueError, match="too short"):
        make_stimulus(family, speech_16k[:3000], sample_rate, 10, seed=1)
    with pytest.raises(ValueError, match="params must be a dict"):
        regenerate(family, speech_16k, sample_rate, [1, 2])


@pytest.mark.parametrize("name", ["clipping", "mulaw", "noise"])
def test_peak_dbfs_is_the_returned_audios_peak(name, speech_16k, sample_rate):
    # the peak is taken from the perturbed clip and the gain, not from the matched audio: it must agree exactly
    out, params = make_stimulus(get_family(name), speech_16k, sample_rate, 70, seed=4)
    assert params["peak_dbfs"] == float(20.0 * np.log10(float(np.max(np.abs(out)))))
