"""Preference statistics (share, Clopper-Pearson CI, binomial test) and the simulated A/B listener."""
from __future__ import annotations

import math

import numpy as np
import pytest

from perturbations.audio import save_audio
from se.data import HELDOUT_CLEAN, HELDOUT_NOISY
from se.preference import (ABItem, PsychometricABListener, binomial_two_sided_p, clopper_pearson, preference_share,
                           simulate_ab, simulate_ab_from_folders)

from .conftest import SR, tone


def test_clopper_pearson_known_values():
    # closed forms at the edges: k = 0 -> upper = 1 - (α/2)^(1/n); k = n -> lower = (α/2)^(1/n)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-9)
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-9)
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-5) and high == pytest.approx(0.812914, abs=1e-5)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError):
        clopper_pearson(1, 2, confidence=1.0)


def test_clopper_pearson_covers_at_least_nominally():
    # exact interval: coverage >= 95% at every true p (checked exactly over all k for n = 20)
    from scipy.stats import binom

    n = 20
    bounds = [clopper_pearson(k, n) for k in range(n + 1)]
    for p in np.linspace(0.01, 0.99, 41):
        coverage = sum(binom.pmf(k, n, p) for k, (lo, hi) in enumerate(bounds) if lo <= p <= hi)
        assert coverage >= 0.95 - 1e-9


def test_binomial_p_values():
    assert binomial_two_sided_p(8, 10) == pytest.approx(112 / 1024)  # P(X<=2) + P(X>=8) at p = 0.5
    assert binomial_two_sided_p(5, 10) == pytest.approx(1.0)
    assert binomial_two_sided_p(0, 0) == 1.0
    assert binomial_two_sided_p(10, 10) == pytest.approx(2 / 1024)


def test_preference_share_excludes_ties_and_rejects_unknown_labels():
    result = preference_share(["b"] * 7 + ["a"] * 3 + ["tie", "None", None, "no preference"])
    assert (result.wins, result.losses, result.ties, result.n) == (7, 3, 4, 10)
    assert result.share == pytest.approx(0.7)
    assert (result.ci_low, result.ci_high) == pytest.approx(clopper_pearson(7, 10))
    assert result.p_value == pytest.approx(binomial_two_sided_p(7, 10))
    assert "7/10" in result.describe() and "4 ties" in result.describe()
    swapped = preference_share(["sysA", "sysB", "sysB"], system="sysA", other="sysB")
    assert (swapped.wins, swapped.n) == (1, 3)
    empty = preference_share(["tie"])
    assert empty.n == 0 and math.isnan(empty.share) and empty.to_dict()["share"] is None and empty.p_value == 1.0
    with pytest.raises(ValueError, match="unknown choice 'c'"):
        preference_share(["a", "c"])


def test_listener_psychometric_function():
    listener = PsychometricABListener(noise_sd=0.3, lapse=0.04)
    assert listener.p_prefer_b(1.0, 1.0) == pytest.approx(0.5)
    assert listener.p_prefer_b(2.0, 1.0) == pytest.approx(1 - listener.p_prefer_b(1.0, 2.0))
    assert listener.p_prefer_b(100.0, 0.0) == pytest.approx(1 - 0.02, abs=1e-6)  # only lapses go wrong
    assert 0.5 < listener.p_prefer_b(1.1, 1.0) < listener.p_prefer_b(1.5, 1.0) < 0.98
    # the same seed gives the same choice; many listeners follow the probability
    rngs = [np.random.default_rng([3, j]) for j in range(4000)]
    picks = [listener.choose(1.2, 1.0, r) for r in rngs]
    assert picks.count("b") / len(picks) == pytest.approx(listener.p_prefer_b(1.2, 1.0), abs=0.03)
    assert listener.choose(1.2, 1.0, np.random.default_rng([3, 0])) == picks[0]
    with pytest.raises(ValueError):
        PsychometricABListener(noise_sd=0)
    with pytest.raises(ValueError):
        listener.p_prefer_b(-1.0, 1.0)


def _items(n=4, seconds=0.3):
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        clean = tone(i, seconds)
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        items.append(ABItem(f"item{i}.wav", clean, clean + 0.05 * noise, clean + 0.002 * noise, SR,
                            clean + 0.1 * noise))
    return items


def test_simulated_ab_prefers_the_output_closer_to_clean():
    result = simulate_ab(_items(), listeners=5, seed=1)
    assert result["noiseless_b_closer"] == 4 and result["items"] == 4 and len(result["choices"]) == 20
    assert result["pooled"]["share"] >= 0.8 and result["by_item"]["wins"] == 4
    d = result["distance_summary"]
    assert d["b"]["mean"] < d["a"]["mean"] < d["noisy"]["mean"]
    again = simulate_ab(list(reversed(_items())), listeners=5, seed=1)
    # per (item, listener) seeds: the choices on item 0 do not depend on where it is in the list
    first = [c["choice"] for c in result["choices"] if c["item"] == "item0.wav"]
    assert first  # and the same clips give the same distances
    assert sorted(c["d_a"] for c in again["choices"]) == pytest.approx(sorted(c["d_a"] for c in result["choices"]))


def test_identical_systems_are_a_coin_flip():
    items = [ABItem(it.name, it.clean, it.a, it.a.copy(), SR) for it in _items(3)]
    result = simulate_ab(items, listeners=40, seed=0)
    assert result["noiseless_b_closer"] == 0
    assert result["pooled"]["ci_low"] < 0.5 < result["pooled"]["ci_high"]


def test_simulation_from_folders_and_mismatched_outputs(tmp_path):
    items = _items(2)
    for it in items:
        save_audio(tmp_path / "held" / HELDOUT_NOISY / it.name, it.noisy, SR)
        save_audio(tmp_path / "held" / HELDOUT_CLEAN / it.name, it.clean, SR)
        save_audio(tmp_path / "a" / it.name, it.a, SR)
        save_audio(tmp_path / "b" / it.name, it.b, SR)
    result = simulate_ab_from_folders(tmp_path / "held", tmp_path / "a", tmp_path / "b", listeners=3)
    assert result["noiseless_b_closer"] == 2 and result["pooled"]["n"] == 6
    save_audio(tmp_path / "b" / items[0].name, items[0].b[:-10], SR)
    with pytest.raises(ValueError, match="does not match the clean"):
        simulate_ab_from_folders(tmp_path / "held", tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / items[0].name).unlink()
    with pytest.raises(FileNotFoundError, match="no enhanced output"):
        simulate_ab_from_folders(tmp_path / "held", tmp_path / "a", tmp_path / "b")
