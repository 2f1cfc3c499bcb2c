"""A/B preference with more than two systems: Bradley-Terry strengths, listener-bootstrap
intervals, the ranking plot and the report section."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from analysis.ab_judgments import AB_COLUMNS
from analysis.pairwise import bradley_terry
from analysis.preference import write_preference_report
from analysis.preference_plots import plot_ranking

TRUE = {"clean_ref": 1.2, "enh_big": 0.4, "enh_small": -0.3, "noisy": -1.3}  # log-strengths, mean 0


def simulate(rng, n_listeners=24, items=4, listener_sd=0.3):
    rows = []
    for w in range(n_listeners):
        offset = {s: rng.normal(0, listener_sd) for s in TRUE}  # listeners disagree a little
        for a, b in itertools.permutations(TRUE, 2):
            if a > b:
                continue
            for item in range(items):
                sa, sb = (a, b) if rng.random() < 0.5 else (b, a)
                d = TRUE[sa] + offset[sa] - TRUE[sb] - offset[sb]
                answer = "A" if rng.random() < 1 / (1 + np.exp(-d)) else "B"
                rows.append(
                    {
                        "worker": f"prolific:w{w}",
                        "platform": "prolific",
                        "worker_id": f"w{w}",
                        "session": f"s{w}",
                        "screening_passed": True,
                        "kind": "main",
                        "pair": "|".join(sorted([sa, sb])),
                        "item": f"clip{item}",
                        "system_a": sa,
                        "system_b": sb,
                        "answer": answer,
                        "preferred": sa if answer == "A" else sb,
                        "skipped_playback": False,
                        "response_time_ms": 1500,
                        "experiment": "ab4",
                        "experiment_id": 1,
                        "trial_index": len(rows),
                    }
                )
        rows.append(
            {
                "worker": f"prolific:w{w}",
                "platform": "prolific",
                "worker_id": f"w{w}",
                "session": f"s{w}",
                "screening_passed": True,
                "kind": "catch_anchor",
                "is_correct": True,
                "answer": "A",
                "experiment": "ab4",
                "experiment_id": 1,
                "item": "anchor",
            }
        )
    df = pd.DataFrame(rows)
    for c in AB_COLUMNS:
        if c not in df:
            df[c] = None
    return df[AB_COLUMNS]


def test_strengths_recover_the_true_order_and_intervals_hold_them():
    df = simulate(np.random.default_rng(3))
    table = bradley_terry(df[df["kind"] == "main"], n_boot=200, seed=1)
    assert list(table["system"]) == ["clean_ref", "enh_big", "enh_small", "noisy"]
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert table["strength"].mean() == pytest.approx(0.0, abs=1e-9)
    t = table.set_index("system")
    for name, s in TRUE.items():
        lo, hi = t.loc[name, "strength_ci_low"], t.loc[name, "strength_ci_high"]
        assert lo < t.loc[name, "strength"] < hi
        assert lo - 0.15 <= s <= hi + 0.15  # truth inside (small slack for the listener offsets' own mean)
    assert (t["comparisons"] == 24 * 4 * 3).all()
    # seeded
    again = bradley_terry(df[df["kind"] == "main"], n_boot=200, seed=1)
    pd.testing.assert_frame_equal(table, again)


def test_listener_bootstrap_is_wider_when_listeners_disagree():
    agree = bradley_terry(
        simulate(np.random.default_rng(5), listener_sd=0.0).query("kind == 'main'"), n_boot=200, seed=0
    )
    disagree = bradley_terry(
        simulate(np.random.default_rng(5), listener_sd=1.5).query("kind == 'main'"), n_boot=200, seed=0
    )
    w = lambda t: (t["strength_ci_high"] - t["strength_ci_low"]).median()  # noqa: E731
    assert w(disagree) > 1.3 * w(agree)


def test_a_system_that_never_loses_has_a_finite_strength():
    df = simulate(np.random.default_rng(0))
    main = df[df["kind"] == "main"].copy()
    top = main["system_a"].eq("clean_ref") | main["system_b"].eq("clean_ref")
    main.loc[top, "preferred"] = "clean_ref"
    table = bradley_terry(main, n_boot=100, seed=0)
    assert table.iloc[0]["system"] == "clean_ref" and np.isfinite(table["strength"]).all()


def test_needs_two_systems():
    with pytest.raises(ValueError, match="at least two systems"):
        bradley_terry(pd.DataFrame({"worker": [], "system_a": [], "system_b": [], "preferred": []}))


def test_report_ranks_more_than_two_systems(tmp_path):
    out = tmp_path / "pref"
    analysis = write_preference_report(simulate(np.random.default_rng(2)), out, n_boot=200, seed=0)
    assert analysis.strengths is not None and len(analysis.strengths) == 4
    for name in ("bradley_terry.csv", "preference_ranking.png", "preference_ranking.pdf", "index.html"):
        assert (out / name).is_file(), name
    page = (out / "index.html").read_text()
    assert "Bradley-Terry" in page and "data:image/png;base64," in page
    report = json.loads((out / "preference.json").read_text())
    assert [r["system"] for r in report["bradley_terry"]][0] == "clean_ref"
    assert any(line.startswith("Bradley-Terry ranking: 1. clean_ref") for line in analysis.summary_lines())
    plot_ranking(analysis.strengths, tmp_path / "rank.png")
    assert (tmp_path / "rank.png").stat().st_size > 0
