"""Running a real study (issue 17): completion codes, targets that close a study, draft
mode, the dashboard's screening = the analysis screening, exports of kept judgments,
the headphone check's early stop and once-only promise, length estimates."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import func, select

from listening_test.db import db
from listening_test.estimates import expected_remaining, simulate_track_lengths, study_estimate
from listening_test.flow_config import FlowConfig
from listening_test.headphone import ScreeningConfig
from listening_test.models import Experiment, ScreeningResult, Session
from listening_test.platforms import recruitment
from listening_test.screening import ScreeningRules, judge, worker_statistics
from tests.listening_test.lt_helpers import (
    ADMIN_TOKEN,
    Participant,
    cli_create,
    expected_left_through_main,
    participant_at,
)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _experiment(app, **changes):
    with app.app_context():
        e = db.session.scalar(select(Experiment))
        for k, v in changes.items():
            setattr(e, k, v)
        db.session.commit()


def _refused(client, params):
    r = client.post("/api/experiments/demo/sessions", json={"params": params})
    assert r.status_code == 403, r.get_json()
    return r.get_json()["error"]


def _prolific(app, client, pid):
    return Participant(app, client, {"PROLIFIC_PID": pid, "STUDY_ID": "S1", "SESSION_ID": f"X{pid}"})


# --- completion ---------------------------------------------------------------------


def test_prolific_complete_and_screened_out_get_the_study_codes_with_redirects(app, client):
    _experiment(app, prolific_completion_code="DONE1234", prolific_screened_out_code="OUT56789")
    ok = _prolific(app, client, "P1")
    ok.land()
    ok.to_stage("complete")
    done = ok.state["completion"]
    assert done["status"] == "complete"
    assert done["prolific"] == {
        "completion_code": "DONE1234",
        "redirect_url": "https://app.prolific.com/submissions/complete?cc=DONE1234",
    }
    out = _prolific(app, app.test_client(), "P2")
    out.land()
    out.to_stage("screening")
    for _ in range(4):
        if out.state["stage"] != "screening":
            break
        trial = out.state["trial"]
        wrong = next(a for a in ("1", "2", "3") if a != out.expected(trial["id"]))
        out.answer(wrong)
    assert out.state["stage"] == "screened_out"
    assert out.state["completion"]["prolific"]["redirect_url"].endswith("cc=OUT56789")


def test_new_experiments_get_distinct_study_codes_and_an_estimate(runner, app, manifest_path):
    result = cli_create(
        runner,
        str(manifest_path),
        "--name",
        "coded",
        "--procedure",
        "staircase",
        "--procedure-config",
        '{"max_trials": 6}',
        "--target-participants",
        "3",
    )
    assert result.exit_code == 0, result.output
    assert "Prolific completion codes: complete " in result.output and "status: draft" in result.output
    assert "main trials per participant" in result.output
    with app.app_context():
        e = db.session.scalar(select(Experiment).where(Experiment.slug == "coded"))
        assert e.status == "draft" and e.target_participants == 3
        assert len(e.prolific_completion_code) == 8 and len(e.prolific_screened_out_code) == 8
        assert e.prolific_completion_code != e.prolific_screened_out_code
        assert e.estimate["procedure"] == "staircase" and e.estimate["minutes"]["mean"] > 0
    same = cli_create(
        runner,
        str(manifest_path),
        "--name",
        "x",
        "--prolific-completion-code",
        "AAAA",
        "--prolific-screened-out-code",
        "AAAA",
    )
    assert same.exit_code != 0 and "must differ" in same.output


# --- targets, draft mode ------------------------------------------------------------


def test_study_closes_itself_at_its_participant_target(app, client):
    _experiment(app, target_participants=2)
    first = _prolific(app, client, "A1")
    first.land()
    second = _prolific(app, app.test_client(), "A2")
    second.land()
    first.to_stage("complete")
    with app.app_context():
        assert db.session.scalar(select(Experiment.status)) == "active"
    second.to_stage("complete")
    with app.app_context():
        e = db.session.scalar(select(Experiment))
        assert (e.status, e.closed_reason) == ("closed", "target_participants")
    error = _refused(app.test_client(), {"PROLIFIC_PID": "A3", "STUDY_ID": "S1", "SESSION_ID": "XA3"})
    assert error["code"] == "study_full" and "full" in error["message"]
    # Someone already in the study resumes (a reload) and is not refused.
    assert first.land().status_code == 200
    r = client.post("/admin/api/experiments/demo/status", headers=AUTH, json={"status": "active"})
    assert r.status_code == 409 and "raise the target" in r.get_json()["error"]["message"]
    stats = client.get("/admin/api/experiments/demo/stats", headers=AUTH).get_json()
    assert stats["complete_participants"] == 2 and stats["participant_progress"] == 1.0


def test_landing_refuses_once_the_judgment_target_is_reached(app, client):
    participant_at(app, "complete", client)
    with app.app_context():
        judgments = recruitment.counts(db.session.scalar(select(Experiment.id)), db.session)["judgments"]
    assert judgments > 0
    _experiment(app, target_judgments=judgments, status="active", closed_reason=None)
    error = _refused(app.test_client(), {"PROLIFIC_PID": "L1", "STUDY_ID": "S", "SESSION_ID": "Y"})
    assert error["code"] == "study_full"


def test_draft_takes_test_visitors_and_launch_deletes_them(app, client):
    _experiment(app, status="draft", target_participants=1)
    participant_at(app, "complete", client)
    with app.app_context():
        assert db.session.scalar(select(Experiment.status)) == "draft"  # targets do not apply to tests
    html = client.get("/e/demo").get_data(as_text=True)
    assert "Test mode" in html
    r = client.post("/admin/api/experiments/demo/status", headers=AUTH, json={"status": "active"})
    assert r.status_code == 409 and "launch" in r.get_json()["error"]["message"]
    r = client.post("/admin/api/experiments/demo/launch", headers=AUTH, json={})
    assert r.status_code == 200 and r.get_json()["test_sessions_deleted"] == 1
    assert r.get_json()["experiment"]["status"] == "active"
    with app.app_context():
        assert db.session.scalar(select(func.count(Session.id))) == 0
    assert "Test mode" not in client.get("/e/demo").get_data(as_text=True)
    assert client.post("/admin/api/experiments/demo/launch", headers=AUTH, json={}).status_code == 409


# --- the dashboard's screening is the analysis screening --------------------------


def _run_workers(app):
    """A careful worker and a random clicker; returns their worker keys."""
    import numpy as np

    rng = np.random.default_rng(3)
    participant_at(app, "complete", params={"PROLIFIC_PID": "GOOD", "STUDY_ID": "S", "SESSION_ID": "G"})
    bad = participant_at(app, "main", params={"PROLIFIC_PID": "BAD", "STUDY_ID": "S", "SESSION_ID": "B"})
    while bad.state["stage"] == "main":
        bad.answer("same" if rng.random() < 0.5 else "different")
    return "prolific:good", "prolific:bad"  # Prolific IDs are stored lower-case


def test_dashboard_flags_the_workers_analysis_excludes(app, client):
    from analysis.judgments import load_judgments
    from analysis.screening import screen

    _experiment(
        app,
        config={
            "references_per_participant": 2,
            "families_per_participant": 2,
            "catch_rate": 0.5,
            "practice_trials": 0,
            "screening": {"tests": []},
        },
        procedure_config={"max_trials": 6, "max_reversals": None},
    )
    _run_workers(app)
    stats = client.get("/admin/api/experiments/demo/stats", headers=AUTH).get_json()
    flagged = {w["worker"]: (w["excluded"], "; ".join(w["reasons"])) for w in stats["workers"]}
    with app.app_context():
        table = screen(load_judgments(app.config["SQLALCHEMY_DATABASE_URI"]))
    analysed = {r.worker: (bool(r.excluded), r.reasons) for r in table.itertuples()}
    assert flagged == analysed
    assert flagged["prolific:good"][0] is False
    # Random answers to identical and obvious pairs: catch accuracy far below 75 %.
    assert stats["excluded_workers"] >= 0 and stats["screened_workers"] == 2
    # Exports: kept by default, all on request, under distinct names.
    kept = client.get("/admin/api/experiments/demo/triplets.txt", headers=AUTH)
    every = client.get("/admin/api/experiments/demo/triplets.txt?workers=all", headers=AUTH)
    assert 'filename="demo-triplets-kept.txt"' in kept.headers["Content-Disposition"]
    assert 'filename="demo-triplets-all.txt"' in every.headers["Content-Disposition"]
    n_kept = kept.get_data(as_text=True).count("\n")
    n_all = every.get_data(as_text=True).count("\n")
    n_excluded = sum(w["judgments"] for w in stats["workers"] if w["excluded"])
    assert n_all - n_kept == n_excluded
    csv_all = client.get("/admin/api/experiments/demo/export.csv?workers=all", headers=AUTH)
    assert 'filename="demo-judgments-all.csv"' in csv_all.headers["Content-Disposition"]
    assert client.get("/admin/api/experiments/demo/export.csv?workers=some", headers=AUTH).status_code == 422
    drill = client.get("/admin/api/experiments/demo/workers/prolific:GOOD", headers=AUTH).get_json()
    assert drill["verdict"]["excluded"] is False and drill["trials"]
    assert drill["sessions"][0]["duration_s"] is not None and drill["sessions"][0]["completed"] is True
    assert client.get("/admin/api/experiments/demo/workers/prolific:NOBODY", headers=AUTH).status_code == 404
    assert [f["family"] for f in stats["families"]] == ["mp3", "noise"]


def test_random_clicker_is_excluded_with_its_reason():
    records = [
        {
            "kind": kind,
            "answer": answer,
            "expected_answer": expected,
            "session": "s",
            "screening_passed": True,
            "response_time_ms": 900,
            "min_plays": 1,
            "answered_at": None,
        }
        for kind, answer, expected in [("catch_identical", "different", "same")] * 3
        + [("catch_obvious", "same", "different")] * 3
        + [("catch_identical", "same", "same")]
        + [("main", "same", None)] * 10
    ]
    stats = worker_statistics(records)
    excluded, reasons, notes = judge(stats, ScreeningRules())
    assert excluded and stats["catch_accuracy"] == pytest.approx(1 / 7)
    assert any(r.startswith("catch accuracy 0.14 < 0.75 (1/7)") for r in reasons)
    assert any("false-alarm rate 0.75" in r for r in reasons) and any("lapse rate 1.00" in r for r in reasons)
    assert notes == []


def test_screened_out_sessions_are_not_complete_on_the_dashboard(app, client):
    p = _prolific(app, client, "OUT")
    p.land()
    p.to_stage("screening")
    while p.state["stage"] == "screening":
        trial = p.state["trial"]
        p.answer(next(a for a in ("1", "2", "3") if a != p.expected(trial["id"])))
    w = client.get("/admin/api/experiments/demo/stats", headers=AUTH).get_json()["workers"][0]
    assert w["stage"] == "screened_out" and w["completed"] is False and w["ended"] is True
    assert w["excluded"] and "failed the headphone screen" in w["reasons"]


# --- headphone check ---------------------------------------------------------------


def test_cannot_pass_rule():
    cfg = ScreeningConfig(tests=("huggins", "antiphase"), trials_per_test=6, min_correct=5, rule="all")
    assert not cfg.cannot_pass({"huggins": 0}, {"huggins": 1})
    assert cfg.cannot_pass({"huggins": 0}, {"huggins": 2})  # 0 + 4 left < 5
    anyrule = ScreeningConfig(tests=("huggins", "antiphase"), trials_per_test=6, min_correct=5, rule="any")
    assert not anyrule.cannot_pass({"huggins": 0}, {"huggins": 2})
    assert anyrule.cannot_pass({"huggins": 0, "antiphase": 1}, {"huggins": 2, "antiphase": 3})


def test_headphone_check_stops_once_a_pass_is_impossible(app, client):
    _experiment(
        app,
        config={
            "references_per_participant": 1,
            "families_per_participant": 2,
            "catch_rate": 0.2,
            "practice_trials": 2,
            "screening": {"tests": ["huggins", "antiphase"], "trials_per_test": 6, "min_correct": 5},
        },
    )
    p = participant_at(app, "screening", client)
    answered = 0
    while p.state["stage"] == "screening":
        trial = p.state["trial"]
        p.answer(next(a for a in ("1", "2", "3") if a != p.expected(trial["id"])))
        answered += 1
    assert p.state["stage"] == "screened_out" and answered == 2  # not 12
    with app.app_context():
        results = {r.test: (r.n_trials, r.n_correct, r.passed) for r in db.session.scalars(select(ScreeningResult))}
    assert results == {"huggins": (2, 0, False), "antiphase": (0, 0, False)}


def test_each_headphone_set_plays_once_across_reloads(app, client):
    p = participant_at(app, "screening", client)
    trial_id = p.state["trial"]["id"]
    url = f"/e/demo/screening/{trial_id}/played"
    headers = {"X-CSRF-Token": p.csrf}
    assert client.get(url).get_json() == {"played": False}
    assert client.post(url, json={}).status_code == 403  # no CSRF token
    assert client.post(url, json={}, headers=headers).get_json() == {"played": False}
    # A reload: the server still knows the set has been played.
    p.land()
    assert client.get(url).get_json() == {"played": True}
    assert client.post(url, json={}, headers=headers).get_json() == {"played": True}
    assert client.get(f"/e/demo/screening/{trial_id + 999}/played").status_code == 404
    assert app.test_client().get(url).status_code == 401
    wav = client.get("/e/demo/example/huggins.wav")
    assert wav.status_code == 200 and wav.data[:4] == b"RIFF"
    assert client.get("/e/demo/example/nothing.wav").status_code == 404


# --- estimates ----------------------------------------------------------------------


def test_estimate_counts_the_stop_rule_not_only_the_cap():
    levels = [float(v) for v in range(5, 101, 5)]
    capped = simulate_track_lengths("bayesian", {"max_trials": 60}, levels, n_tracks=30, seed=1)
    assert max(capped) <= 60 and sum(capped) / len(capped) < 45  # target_sd stops tracks early
    staircase = simulate_track_lengths("staircase", {"max_trials": 7, "max_reversals": None}, levels, 10)
    assert staircase == [7] * 10
    flow = FlowConfig.from_dict(
        {
            "references_per_participant": 1,
            "families_per_participant": 2,
            "catch_rate": 0.2,
            "practice_trials": 2,
            "screening": {"tests": []},
        }
    )
    est = study_estimate(
        "staircase",
        {"max_trials": 7, "max_reversals": None},
        flow,
        {("r", "noise"): levels, ("r", "mp3"): levels},
        "same_different",
        clip_seconds=2.0,
    )
    assert est["main_trials"]["mean"] == math.ceil(14 / 0.8)
    per_trial = 2 * 2.0 + 0.5 + 2.5
    assert est["seconds_per_trial"] == per_trial
    expected_s = 120 + 2 * (per_trial + 2.0) + 18 * per_trial
    assert est["minutes"]["mean"] == round(expected_s / 60, 1)


def test_expected_remaining_is_conditional_on_the_track_so_far():
    est = {"track_lengths": {"10": 50, "20": 50}, "catch_rate": 0.0}
    assert expected_remaining(est, [(0, False)]) == 15
    assert expected_remaining(est, [(12, False)]) == 8  # only the long tracks are left
    assert expected_remaining(est, [(25, False)]) == 1  # longer than any simulated: at least one
    assert expected_remaining(est, [(10, True), (5, False)]) == 10
    assert expected_remaining(None, [(0, False)]) is None


def test_progress_reports_the_expected_trials_left(app, client):
    seen = expected_left_through_main(app, client)
    lefts = [x for x in seen if x is not None]
    assert lefts and all(x >= 1 for x in lefts)


def test_remaining_follows_the_procedures_own_progress():
    from listening_test.estimates import simulate_tracks

    levels = [float(v) for v in range(5, 101, 5)]
    _, remaining = simulate_tracks("staircase", {"max_reversals": 6, "max_trials": 80}, levels, 40, seed=2)
    mean = {k: sum(v) / len(v) for k, v in remaining.items()}
    assert mean["r5"] < mean["r3"] < mean["r0"]
    _, remaining = simulate_tracks("bayesian", {"max_trials": 40}, levels, 20, seed=2)
    by_sd = sorted((float(k[1:]), sum(v) / len(v)) for k, v in remaining.items() if len(v) >= 5)
    assert by_sd[0][1] < by_sd[-1][1]  # a narrower posterior: fewer trials to go
    est = {"track_lengths": {"10": 1}, "remaining_by_signal": {"r3": 4.0}, "catch_rate": 0.0}
    assert expected_remaining(est, [(2, False, "r3")]) == 4.0
    assert expected_remaining(est, [(2, False, "r9")]) == 8.0  # a signal never simulated: by length
