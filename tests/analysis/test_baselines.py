"""Baseline distances run on a short clip pair (or skip with a note) and order clean < degraded."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import baselines
from analysis.agreement import agreement
from tests.analysis.an_helpers import save_untrained_metric

SR = 16000


@pytest.fixture(scope="module")
def clip_pair():
    """1 s of a modulated harmonic tone (speech-like enough for PESQ/STOI) and a noisy copy."""
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    ref = 0.2 * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 440 * t)) * (1 + np.sin(2 * np.pi * 3 * t))
    ref = (ref + 0.005 * rng.standard_normal(SR)).astype(np.float32)
    return ref, (ref + 0.05 * rng.standard_normal(SR)).astype(np.float32)


FAST = ("l1", "l2", "logmel_l1", "mrstft", "sisdr", "pesq", "stoi")


@pytest.mark.parametrize("name", FAST)
def test_fast_baseline_orders_identical_below_degraded(name, clip_pair):
    fns, skipped = baselines.make_baselines([name])
    if name in skipped:
        pytest.skip(f"{name}: {skipped[name]}")
    ref, deg = clip_pair
    same, different = fns[name](ref, ref.copy(), SR), fns[name](ref, deg, SR)
    assert np.isfinite(same) and np.isfinite(different)
    assert same < different


@pytest.mark.slow
@pytest.mark.parametrize("name", ["visqol", "cdpam"])
def test_heavy_baseline_runs_or_skips_with_note(name, clip_pair):
    fns, skipped = baselines.make_baselines([name])
    if name in skipped:
        assert skipped[name]  # a note saying why
        pytest.skip(f"{name}: {skipped[name]}")
    ref, deg = clip_pair
    assert fns[name](ref, ref.copy(), SR) < fns[name](ref, deg, SR)


def test_unavailable_baseline_is_skipped_with_note(monkeypatch):
    def broken():
        raise baselines.BaselineUnavailable("package not installed here")

    monkeypatch.setitem(baselines._FACTORIES, "pesq", broken)
    fns, skipped = baselines.make_baselines(["l1", "pesq"])
    assert list(fns) == ["l1"] and skipped == {"pesq": "package not installed here"}


def test_parse_names():
    assert baselines.parse_names("all") == list(baselines.ALL_BASELINES)
    assert baselines.parse_names("l2,l1") == ["l1", "l2"]
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.parse_names("l1,lpips")


def test_short_clip_stoi_drops_pair_with_note(tmp_path):
    import pandas as pd
    import soundfile as sf

    rng = np.random.default_rng(1)
    a = (0.1 * rng.standard_normal(800)).astype(np.float32)
    sf.write(tmp_path / "a.wav", a, SR)
    sf.write(tmp_path / "b.wav", a + 0.01, SR)
    fns, skipped = baselines.make_baselines(["stoi"])
    if skipped:
        pytest.skip(skipped["stoi"])
    pairs = pd.DataFrame(
        {"ref_audio": [str(tmp_path / "a.wav")], "test_audio": [str(tmp_path / "b.wav")], "label": [1]}
    )
    res = agreement(pairs, fns["stoi"], name="stoi")
    assert res.n_failed_pairs == 1 and "dropped" in res.notes[0]


def test_learned_metric_hook(tmp_path, clip_pair):
    """A jndlab checkpoint scored as a baseline: model.score builds it, analysis only scores a callable."""
    pytest.importorskip("torch")
    from model.score import learned_distance

    fn = learned_distance(save_untrained_metric(tmp_path / "m.pt"))
    ref, deg = clip_pair
    assert fn.trained_on == "simulated" and fn.__name__ == f"learned:{tmp_path / 'm.pt'}"
    assert fn(ref, ref.copy(), SR) <= fn(ref, deg, SR)


def test_metric_distance_scores_any_callable(clip_pair):
    """LPIPS-style: whatever callable is passed in is scored on (1, samples) tensors, without gradients."""
    torch = pytest.importorskip("torch")
    seen = []

    def rms_difference(ref, test, sample_rate):
        seen.append((tuple(ref.shape), sample_rate, torch.is_grad_enabled()))
        return ((ref - test) ** 2).mean(dim=-1).sqrt()

    fn = baselines.metric_distance(rms_difference)
    ref, deg = clip_pair
    assert fn.__name__ == "rms_difference" and fn.trained_on == "unknown"
    assert fn(ref, deg, SR) == pytest.approx(baselines.l2(ref, deg, SR), rel=1e-5)
    assert seen == [((1, len(ref)), SR, False)]
    assert baselines.metric_distance(rms_difference, name="rms").__name__ == "rms"


def test_quality_scores_are_one_set(clip_pair):
    """se.scores evaluates with analysis.baselines' SI-SDR and STOI; the distances are their negations."""
    from se import scores

    assert scores.si_sdr_db is baselines.si_sdr_db and scores.stoi is baselines.stoi
    ref, deg = clip_pair
    sdr = baselines.si_sdr_db(ref, deg)
    assert 10.0 < sdr < 14.0  # a tone of RMS ~0.19 over white noise of RMS 0.05: ~11.6 dB
    assert baselines.sisdr_distance(ref, deg, SR) == pytest.approx(-sdr)
    assert baselines.sisdr_distance(ref, ref, SR) == -baselines.SISDR_CAP_DB
    assert np.isnan(baselines.si_sdr_db(np.zeros(100), np.ones(100)))
    with pytest.raises(ValueError, match="silent reference"):
        baselines.sisdr_distance(np.zeros(100), np.ones(100), SR)
    with pytest.raises(ValueError, match="one length"):
        baselines.si_sdr_db(ref, deg[:-1])
    name, out = scores.score_pair(("clip", ref, deg, ref, SR))
    assert name == "clip" and out["si_sdr_db_noisy"] == pytest.approx(sdr)
    if "stoi" not in baselines.make_baselines(["stoi"])[1]:
        assert out["stoi_noisy"] == pytest.approx(baselines.stoi(ref, deg, SR)) and out["stoi_enhanced"] > 0.99
