"""The simulated A/B listener and the simulated A/B test (the statistics are tested in tests/analysis/test_pairwise.py)."""

from __future__ import annotations

import numpy as np
import pytest

from perturbations.audio import save_audio
from se.data import HELDOUT_CLEAN, HELDOUT_NOISY
from se.preference import ABItem, PsychometricABListener, preference_share, simulate_ab, simulate_ab_from_folders
from tests.conftest import python_output

from .conftest import SR, tone


def test_statistics_and_listener_are_re_exported_from_their_homes():
    # the statistics live in analysis.pairwise (tested there), the listener in the simulation package
    import analysis.pairwise as pairwise
    import se.preference as preference
    from listening_test.simulation import ab_listener

    for name in ("clopper_pearson", "binomial_two_sided_p", "PreferenceResult", "preference_share", "TIE_LABELS"):
        assert getattr(preference, name) is getattr(pairwise, name)
    assert preference.PsychometricABListener is ab_listener.PsychometricABListener
    assert preference_share(["b", "a", "b"]).wins == 2


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
        items.append(
            ABItem(f"item{i}.wav", clean, clean + 0.05 * noise, clean + 0.002 * noise, SR, clean + 0.1 * noise)
        )
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


def test_importing_the_offline_ab_test_does_not_import_flask():
    code = "import sys, se.preference; print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'flask_sqlalchemy')))"
    assert python_output(code) == "[]"
