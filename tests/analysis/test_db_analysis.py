"""Analysis of a listening-test database: export, screening, JNDs, agreement, report, edge cases."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.agreement import agreement, best_threshold, roc_auc, score_distances
from analysis.baselines import l2
from analysis.jnd import jnd_tables
from analysis.judgments import JudgmentsError, load_judgments, pairs_table
from analysis.screening import ScreeningRules, included_judgments, screen
from analysis.triplets import read_triplets
from tests.analysis.an_helpers import THRESHOLDS, Worker, bitrate_kbps, fill_judgments, snr_db


@pytest.fixture(scope="module")
def judgments(filled_db):
    return load_judgments(filled_db)


# ----------------------------------------------------------------------------- export


def test_tidy_table_has_every_field(judgments):
    assert len(judgments) == 11 * (2 * 2 * 10 * 6 + 2 * 20)
    assert set(judgments["kind"]) == {"main", "catch_identical", "catch_obvious"}
    row = judgments[(judgments["kind"] == "main") & (judgments["family"] == "noise")].iloc[0]
    assert row["param_snr_db"] == pytest.approx(snr_db(row["level"]))
    assert row["worker"].startswith("prolific:") and row["session"].startswith("s-")
    ident = judgments[judgments["kind"] == "catch_identical"]
    assert ident["identical"].all() and (ident["expected_answer"] == "same").all()
    assert judgments["answered_at"].str.endswith("Z").all()


def test_export_is_byte_stable_and_round_trips(filled_db, tmp_path, judgments):
    files = []
    for run in range(2):
        out, csv = tmp_path / f"t{run}.txt", tmp_path / f"j{run}.csv"
        assert main(["export", "--db", filled_db, "--out", str(out), "--csv", str(csv)]) == 0
        files.append((out.read_bytes(), csv.read_bytes()))
    assert files[0] == files[1]
    trip = read_triplets(tmp_path / "t0.txt")
    # screened-out sessions (failed headphones) are dropped by default
    main_rows = judgments[(judgments["kind"] == "main") & judgments["screening_passed"].ne(False).fillna(True)]
    assert len(trip) == len(main_rows)
    expected = sorted(
        zip(main_rows["reference_path"], main_rows["test_path"], main_rows["response_different"].astype(int))
    )
    assert sorted(zip(trip["ref"], trip["perturbed"], trip["label"])) == expected
    assert (tmp_path / "t0.txt").read_text().startswith("# jndlab triplets")
    tidy = pd.read_csv(tmp_path / "j0.csv")
    assert len(tidy) == len(judgments) and list(tidy.columns) == list(judgments.columns)


def test_export_relative_to_other_root_and_screen(filled_db, tmp_path, judgments):
    root = judgments["audio_root"].iloc[0]
    out = tmp_path / "t.txt"
    assert (
        main(
            [
                "export",
                "--db",
                filled_db,
                "--out",
                str(out),
                "--audio-root-relative-to",
                str(tmp_path),
                "--screen",
                "--no-header",
            ]
        )
        == 0
    )
    trip = read_triplets(out, audio_root=tmp_path)
    assert all(p.startswith("../") for p in trip["ref"])
    assert (tmp_path / trip["ref"].iloc[0]).resolve().is_relative_to(root)
    assert len(trip) == 8 * 240  # only the eight good workers' main trials


# ----------------------------------------------------------------------------- screening


def test_screening_flags_bad_workers_only(judgments):
    table = screen(judgments, ScreeningRules()).set_index("worker")
    assert table.loc["prolific:clicker", "excluded"]
    assert "catch accuracy" in table.loc["prolific:clicker", "reasons"]
    assert "response time" in table.loc["prolific:clicker", "reasons"]
    assert table.loc["prolific:sayssame", "excluded"]
    assert "lapse rate 1.00" in table.loc["prolific:sayssame", "reasons"]
    assert table.loc["prolific:noheadphones", "reasons"] == "failed the headphone screen"
    good = table[table.index.str.contains("good")]
    assert len(good) == 8 and not good["excluded"].any()
    kept = included_judgments(judgments)
    assert set(kept["worker"]) == set(good.index)


def test_screening_rules_from_json_and_flags(tmp_path, judgments, filled_db, capsys):
    rules_file = tmp_path / "rules.json"
    rules_file.write_text('{"require_headphone_screen": false, "min_median_rt_ms": null}')
    rules = ScreeningRules.from_json(rules_file)
    table = screen(judgments, rules).set_index("worker")
    assert not table.loc["prolific:noheadphones", "excluded"]
    assert "response time" not in table.loc["prolific:clicker", "reasons"]
    rules_file.write_text('{"min_catch_acuracy": 0.9}')
    with pytest.raises(ValueError, match="unknown screening rule"):
        ScreeningRules.from_json(rules_file)
    out = tmp_path / "screen.csv"
    assert (
        main(
            [
                "screen",
                "--db",
                filled_db,
                "--out",
                str(out),
                "--max-lapse-rate",
                "none",
                "--min-catch-accuracy",
                "0.4",
                "--require-headphone-screen",
                "false",
            ]
        )
        == 0
    )
    table = pd.read_csv(out).set_index("worker")
    assert not table.loc["prolific:sayssame", "excluded"]  # every rule that catches it is off


# ----------------------------------------------------------------------------- JNDs


def test_jnd_recovered_per_family_in_levels_and_physical_units(judgments):
    tables = jnd_tables(included_judgments(judgments), n_boot=200, rng=np.random.default_rng(0))
    fam = tables["by_family"].set_index("family")
    for family, true in THRESHOLDS.items():
        r = fam.loc[family]
        assert r["estimable"], r["reason"]
        assert abs(r["jnd_level"] - true) < 5
        assert r["jnd_level_ci_low"] < r["jnd_level"] < r["jnd_level_ci_high"]
    assert fam.loc["noise", "physical_param"] == "snr_db"
    assert fam.loc["noise", "jnd_physical"] == pytest.approx(snr_db(fam.loc["noise", "jnd_level"]))
    assert fam.loc["mp3", "physical_param"] == "bitrate_kbps"
    assert fam.loc["mp3", "jnd_physical"] == pytest.approx(bitrate_kbps(fam.loc["mp3", "jnd_level"]))
    # kbps fall as the level rises: the CI is still ordered low < high
    assert fam.loc["mp3", "jnd_physical_ci_low"] < fam.loc["mp3", "jnd_physical_ci_high"]
    assert len(tables["by_reference"]) == 4 and tables["by_reference"]["estimable"].all()
    part = tables["by_participant"]
    assert len(part) == 16 and part["estimable"].mean() >= 0.75
    est = part[part["estimable"]]
    assert (est["jnd_level"] - est["family"].map(THRESHOLDS)).abs().median() < 8


def test_jnd_not_estimable_is_explained(judgments):
    few = judgments[(judgments["kind"] == "main") & (judgments["worker"] == "prolific:good0")].head(12)
    table = jnd_tables(few, n_boot=0)["by_family"]
    assert not table["estimable"].any()
    assert table["reason"].str.contains("trials").all()
    flat = judgments[judgments["worker"] == "prolific:sayssame"]
    table = jnd_tables(flat, n_boot=0)["by_family"]
    assert table["reason"].str.contains("all responses 'same'").all()


# ----------------------------------------------------------------------------- agreement


def test_score_distances_informative_vs_noise():
    rng = np.random.default_rng(3)
    n = 2000
    labels = rng.integers(0, 2, n)
    refs = rng.integers(0, 20, n)
    informative = labels + 0.7 * rng.standard_normal(n)
    noise = rng.standard_normal(n)
    good = score_distances(informative, labels, refs, None, n_folds=5, rng=np.random.default_rng(0))
    bad = score_distances(noise, labels, refs, None, n_folds=5, rng=np.random.default_rng(0))
    assert good.roc_auc > 0.8 and good.cv_accuracy > 0.7
    assert abs(bad.roc_auc - 0.5) < 0.05 and bad.cv_accuracy < 0.55
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    t, acc = best_threshold([1, 2, 3, 4], [0, 0, 1, 1])
    assert 2 < t < 3 and acc == 1.0


def test_agreement_on_database_pairs(judgments):
    pairs = pairs_table(included_judgments(judgments))
    res = agreement(pairs, l2, rng=np.random.default_rng(0), name="l2")
    assert res.roc_auc > 0.8 and res.cv_accuracy > 0.7 and res.spearman_rho > 0.8
    assert res.n_pairs == 40 and res.n_folds == 2
    hashed = agreement(
        pairs,
        lambda r, t, sr: float(np.random.default_rng(int(abs(t.sum()) * 1e6)).random()),
        rng=np.random.default_rng(0),
        name="noise",
    )
    assert abs(hashed.roc_auc - 0.5) < 0.2 and hashed.roc_auc < res.roc_auc

    def flaky(r, t, sr):
        raise RuntimeError("metric exploded")

    failed = agreement(pairs, flaky, name="flaky")
    assert failed.n_failed_pairs == 40 and "metric exploded" in failed.notes[0]


# ----------------------------------------------------------------------------- report and edge cases


def test_report_writes_html_pngs_and_csvs(filled_db, tmp_path):
    out = tmp_path / "report"
    assert (
        main(
            [
                "report",
                "--db",
                filled_db,
                "--out",
                str(out),
                "--baselines",
                "l1,l2,sisdr",
                "--n-boot",
                "50",
                "--dpam",
                "none",
                "--no-progress",
            ]
        )
        == 0
    )
    html = (out / "index.html").read_text()
    for name in (
        "jnd_by_family.csv",
        "jnd_by_participant.csv",
        "jnd_by_reference.csv",
        "screening.csv",
        "agreement.csv",
        "judgments.csv",
        "psychometric_noise.png",
        "psychometric_mp3.png",
        "calibration.png",
        "jnd_distribution.png",
        "judgments_over_time.png",
    ):
        assert (out / name).is_file(), name
    assert "data:image/png;base64," in html and "<script" not in html and "http" not in html.replace("sqlite", "")
    assert "failed the headphone screen" in html
    # a paper can use it: vector figures beside the PNGs, readable numbers, tables that scroll in their box
    for name in ("psychometric_noise.pdf", "calibration.pdf", "jnd_distribution.pdf"):
        assert (out / name).is_file(), name
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", html)
    assert cells and not [c for c in cells if re.search(r"\d[eE][-+]?\d|\binf\b|nan", c)]
    assert "−∞" not in html and "class=scroll" in html and "max-width:1180px" in html
    by_family = pd.read_csv(out / "jnd_by_family.csv").set_index("family")
    assert by_family.loc["noise", "jnd_text"].startswith(f"{by_family.loc['noise', 'jnd_level']:.3g}"[:3])
    agree = pd.read_csv(out / "agreement.csv")
    assert list(agree["metric"]) == ["l1", "l2", "sisdr"]


def test_empty_database_gives_clear_message(fresh_db, tmp_path, capsys):
    url = f"sqlite:///{fresh_db}"
    assert main(["export", "--db", url, "--out", str(tmp_path / "t.txt")]) == 1
    assert "no judgments" in capsys.readouterr().err
    assert main(["report", "--db", url, "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    assert "no judgments" in capsys.readouterr().err
    assert main(["export", "--db", f"sqlite:///{tmp_path}/missing.sqlite", "--out", str(tmp_path / "t.txt")]) == 1
    assert "no SQLite database file" in capsys.readouterr().err
    blank = tmp_path / "blank.sqlite"
    blank.touch()
    with pytest.raises(JudgmentsError, match="not a jndlab listening-test database"):
        load_judgments(f"sqlite:///{blank}")


def test_database_without_main_trials(fresh_db, tmp_path, capsys):
    fill_judgments(fresh_db, [Worker("w1")], np.random.default_rng(0), kinds=("catch_identical", "practice"))
    url = f"sqlite:///{fresh_db}"
    assert main(["export", "--db", url, "--out", str(tmp_path / "t.txt")]) == 1
    err = capsys.readouterr().err
    assert "no main judgments to export" in err and "catch_identical: 20" in err
    out = tmp_path / "r"
    assert main(["report", "--db", url, "--out", str(out), "--no-progress", "--dpam", "none"]) == 0
    assert "no main-trial judgments" in (out / "index.html").read_text()
    with pytest.raises(ValueError, match="no main-trial judgments"):
        jnd_tables(load_judgments(url), n_boot=0)
    shutil.rmtree(out)


@pytest.mark.slow
def test_jnd_ci_coverage_near_nominal_over_repeated_simulations():
    # 60 simulated experiments (5 levels x 20 trials + 30 identical pairs), 95% bootstrap CIs:
    # coverage SE ~ 0.03, so [0.85, 1.0] fails CIs that are badly too narrow.
    rng = np.random.default_rng(5)
    levels = np.repeat([20.0, 35.0, 50.0, 65.0, 80.0], 20)
    hits = n_est = 0
    for _ in range(60):
        p = 0.05 + 0.93 / (1 + np.exp(-0.12 * (levels - 50.0)))
        main = pd.DataFrame(
            {
                "kind": "main",
                "family": "noise",
                "reference": "r",
                "experiment_id": 1,
                "worker": "w",
                "level": levels,
                "response_different": (rng.random(levels.size) < p) * 1.0,
            }
        )
        ident = pd.DataFrame(
            {
                "kind": "catch_identical",
                "family": "noise",
                "reference": "r",
                "experiment_id": 1,
                "worker": "w",
                "level": 0.0,
                "response_different": (rng.random(30) < 0.05) * 1.0,
            }
        )
        fit = jnd_tables(pd.concat([main, ident]), n_boot=200, rng=rng)["by_family"].iloc[0]
        if fit["estimable"]:
            n_est += 1
            hits += fit["jnd_level_ci_low"] <= 50.0 <= fit["jnd_level_ci_high"]
    assert n_est >= 55
    assert 0.85 <= hits / n_est <= 1.0


def test_jnd_distribution_plot_accepts_a_ci_that_excludes_the_estimate(tmp_path):
    """Percentile-bootstrap CIs need not contain the ML estimate (seen in the pipeline's report)."""
    import pandas as pd

    from analysis.jnd import plot_jnd_distribution

    table = pd.DataFrame(
        {
            "family": ["noise", "noise", "mp3"],
            "estimable": [True, True, True],
            "jnd_level": [40.0, 55.0, 60.0],
            "jnd_level_ci_low": [42.0, 50.0, float("nan")],
            "jnd_level_ci_high": [60.0, 53.0, 70.0],
        }
    )
    plot_jnd_distribution(table, tmp_path / "jnd.png")
    assert (tmp_path / "jnd.png").stat().st_size > 0
