"""A whole participant session through the JSON API, with reloads in the middle."""

from __future__ import annotations

from sqlalchemy import func, select

from listening_test.db import db
from listening_test.models import Response, ScreeningResult, Session, Track, Trial
from tests.listening_test.lt_helpers import Participant, db_snapshot, row_counts


def test_full_mturk_flow_with_reload(app, client):
    p = Participant(app, client)
    r = p.land()
    assert r.status_code == 201
    assert p.state["stage"] == "consent"
    assert "jndlab_session" in r.headers.get("Set-Cookie", "")
    p.to_stage("volume")
    assert p.state["volume"]["clips"][0]["url"].startswith("/audio/")
    p.to_stage("screening")
    first = p.state["trial"]
    assert first["phase"] == "screening" and len(first["clips"]) == 3
    assert first["choices"] == ["1", "2", "3"]

    # Reload: the same platform IDs land on the same session and the same open trial.
    again = Participant(app, client, p.params)
    assert again.land().status_code == 200
    assert again.state["trial"]["id"] == first["id"] and again.state["trial"]["nonce"] == first["nonce"]
    assert client.get("/api/session").get_json()["state"]["trial"]["id"] == first["id"]

    p.to_stage("practice")
    body = p.answer()
    assert body["feedback"]["correct"] is True
    p.to_stage("main")
    trial = p.state["trial"]
    assert trial["phase"] == "main" and [c["label"] for c in trial["clips"]] == ["A", "B"]
    assert "level" not in trial and "kind" not in trial  # nothing gives the pair away

    # Reload in the main phase, via the cookie only: the same trial, and serving writes nothing.
    before = db_snapshot(app)
    reloaded = client.get("/api/session").get_json()["state"]
    assert reloaded["trial"] == trial
    assert db_snapshot(app) == before

    p.to_stage("complete")
    completion = p.state["completion"]
    assert completion["status"] == "complete" and len(completion["code"]) == 10
    assert completion["mturk"]["action"] == "https://www.mturk.com/mturk/externalSubmit"
    assert completion["mturk"]["fields"]["assignmentId"] == "A1"
    assert p.state["trial"] is None

    with app.app_context():
        session = db.session.scalar(select(Session))
        assert session.screening_passed is True and session.completion_code == completion["code"]
        trials = db.session.scalars(select(Trial).order_by(Trial.trial_index)).all()
        assert [t.trial_index for t in trials] == list(range(len(trials)))
        assert all(t.answered for t in trials)
        n_responses = db.session.scalar(select(func.count()).select_from(Response))
        assert n_responses == len(trials)  # every served trial answered exactly once
        assert {r.test for r in db.session.scalars(select(ScreeningResult))} == {"huggins", "antiphase"}
        tracks = db.session.scalars(select(Track)).all()
        assert len(tracks) == 2 and all(t.finished for t in tracks)
        assert all(t.n_trials == 4 for t in tracks)  # PROCEDURE_CONFIG max_trials
        kinds = {t.kind for t in trials}
        assert {"screening", "practice", "main"} <= kinds


def test_prolific_completion_redirect(app, client):
    p = Participant(app, client, {"PROLIFIC_PID": "P1", "STUDY_ID": "S1", "SESSION_ID": "X1"})
    p.land()
    p.to_stage("complete")
    prolific = p.state["completion"]["prolific"]
    assert prolific["redirect_url"] == "https://app.prolific.com/submissions/complete?cc=PROLIFIC123"


def test_screening_failure_ends_the_session(app, client):
    p = Participant(app, client)
    p.land()
    p.to_stage("screening")
    while p.state["stage"] == "screening":
        right = p.expected(p.state["trial"]["id"])
        p.answer(answer="1" if right != "1" else "2")
    assert p.state["stage"] == "screened_out"
    assert p.state["completion"]["status"] == "screened_out"
    with app.app_context():
        assert db.session.scalar(select(Session.screening_passed)) is False
        assert db.session.scalar(select(func.count()).select_from(Track)) == 0  # none started


def test_mturk_preview_creates_nothing(app, client):
    before = row_counts(app)
    r = client.post(
        "/api/experiments/demo/sessions",
        json={"params": {"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "H1"}},
    )
    assert r.status_code == 200 and r.get_json()["preview"] is True
    assert "Set-Cookie" not in r.headers
    assert row_counts(app) == before


def test_plain_link_resumes_by_cookie_and_new_browser_is_new_participant(app, client):
    p = Participant(app, client, {})
    assert p.land().status_code == 201
    p.to_stage("volume")
    assert p.land().status_code == 200 and p.state["stage"] == "volume"
    other = Participant(app, app.test_client(), {})
    assert other.land().status_code == 201 and other.state["stage"] == "consent"
