"""``python -m se ab-test --simulate`` end to end: two systems' outputs -> an A/B experiment ->
simulated listeners over HTTP (local werkzeug server, SQLite in tmp) -> the preference report.

The two "systems" leave white noise at 30 dB SNR (good) and 6 dB SNR (bad) on harmonic
test clips; the anchor is the 0 dB input. Good simulated listeners compare the auditory
model's distances of A and B to the reference, so the good system must win; random
clickers and position-biased workers (always "A") fail the anchor catch trials (or the
headphone check) and are excluded, good listeners are not excluded for their catch
trials; every acknowledged answer is in the database exactly once.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from se.__main__ import main as se_main
from tests.listening_test.lt_helpers import seed_sessions_by_worker, write_ab_folders

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_ITEMS = 8
SCREENING = {"tests": ["huggins", "antiphase"], "trials_per_test": 2, "min_correct": 2}


def test_an_ab_test_of_two_systems_runs_end_to_end_with_simulated_listeners(tmp_path, capsys, monkeypatch):
    seed_sessions_by_worker(monkeypatch)  # the command serves in this process; see the catch-trial checks
    folders = write_ab_folders(tmp_path / "systems", n_items=N_ITEMS)
    url = f"sqlite:///{tmp_path / 'ab.sqlite'}"
    report = tmp_path / "report"
    code = se_main(
        [
            "ab-test",
            "--clean",
            str(folders["clean"]),
            "--system",
            f"good={folders['good']}",
            "--system",
            f"bad={folders['bad']}",
            "--anchor",
            f"noisy={folders['noisy']}",
            "--out",
            str(tmp_path / "set"),
            "--name",
            "se-ab",
            "--database-url",
            url,
            "--items-per-participant",
            str(N_ITEMS),
            "--repeats",
            "2",
            "--catch-rate",
            "0.3",
            "--config",
            json.dumps({"screening": SCREENING}),
            "--simulate",
            "12",
            "--bad-workers",
            "random=2,same=2",
            "--seed",
            "5",
            "--report",
            str(report),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "created A/B experiment 'se-ab'" in out and "good preferred over bad" in out

    summary = json.loads((report / "simulation" / "summary.json").read_text())
    assert summary["contract_violations"] == [] and summary["fatal_errors"] == []
    # (a random clicker usually fails the headphone check and ends screened out)
    assert summary["complete"] + summary["screened_out"] == 12 and summary["unfinished"] == 0

    # Every acknowledged answer is stored once, with the answer the client sent.
    sent = [json.loads(line) for line in (report / "simulation" / "answers.jsonl").read_text().splitlines()]
    acknowledged = {a["trial_id"]: a["answer"] for a in sent if not a["duplicate"]}
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT trial_id, answer FROM responses")).all())
        open_trials = conn.execute(text("SELECT COUNT(*) FROM trials WHERE NOT answered")).scalar_one()
    engine.dispose()
    assert stored == acknowledged and open_trials == 0

    result = json.loads((report / "preference.json").read_text())
    assert len(result["pairs"]) == 1
    pair = result["pairs"][0]
    assert (pair["system"], pair["other"]) == ("good", "bad")
    assert pair["pooled"]["ci_low"] > 0.5 and pair["pooled"]["p_value"] < 1e-3, pair["summary"]
    truth = json.loads((report / "simulation" / "truth.json").read_text())
    kinds = {worker: info["kind"] for worker, info in truth["listeners"].items()}
    workers = pd.read_csv(report / "workers.csv", keep_default_na=False)
    workers["kind"] = workers["worker_id"].map(kinds)
    # About 7 catch trials each: a worker answering at random passes 0.8 with P ~ 0.06, so
    # at least two of the four bad workers go (P(fail) < 0.001). A good listener misses a
    # catch trial (clean vs 0 dB noise) only by a lapse (mean 0.03, half of them right), so
    # two misses in 7 happen with P ~ 0.005 each: at most one of 8 (P(fail) < 0.001).
    # Chances of 1e-3 a run are too many for CI: the sessions are seeded by worker ID
    # (seed_sessions_by_worker), so every run serves the same catch trials.
    bad = workers[workers["kind"] != "good"]
    assert (bad["excluded"].astype(str) == "True").sum() >= 2, bad[["worker", "kind", "reasons"]]
    good = workers[workers["kind"] == "good"]
    assert good["reasons"].str.contains("catch").sum() <= 1, good[["worker", "reasons"]]
    for name in ("index.html", "preference_shares.png", "preference_by_item.csv", "excluded_workers.csv"):
        assert (report / name).is_file()
