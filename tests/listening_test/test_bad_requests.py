"""Every bad request gets its 4xx JSON error and leaves the database unchanged."""

from __future__ import annotations

import pytest

from tests.listening_test.lt_helpers import Participant, db_snapshot


def _rejected(app, response, status, code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["status"] == status
    if code:
        assert body["error"]["code"] == code
    return body


def test_forged_nonce(app, in_main):
    before = db_snapshot(app)
    body = in_main.answer_body()
    body["nonce"] = "forged-nonce-value"
    _rejected(app, in_main.post("/api/session/answer", body), 403, "bad_nonce")
    assert db_snapshot(app) == before


def test_forged_trial_id(app, in_main):
    before = db_snapshot(app)
    body = in_main.answer_body()
    body["trial_id"] = 999_999
    _rejected(app, in_main.post("/api/session/answer", body), 404, "trial_not_found")
    assert db_snapshot(app) == before


def test_stale_trial_with_a_different_answer_is_409(app, in_main):
    old = in_main.state["trial"]
    first = in_main.answer_body(answer="same", trial=old)
    assert in_main.post("/api/session/answer", first).status_code == 200
    before = db_snapshot(app)
    second = dict(first, answer="different")
    _rejected(app, in_main.post("/api/session/answer", second), 409, "already_answered")
    assert db_snapshot(app) == before


def test_replay_of_the_same_answer_is_idempotent(app, in_main):
    body = in_main.answer_body(answer="same")
    first = in_main.post("/api/session/answer", body)
    assert first.status_code == 200 and first.get_json()["duplicate"] is False
    before = db_snapshot(app)
    again = in_main.post("/api/session/answer", body)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert again.get_json()["state"]["trial"]["id"] == first.get_json()["state"]["trial"]["id"]
    assert db_snapshot(app) == before


def test_wrong_participant_cannot_answer_anothers_trial(app, in_main):
    other = Participant(app, app.test_client(), {"workerId": "W2", "assignmentId": "A2", "hitId": "H1"})
    other.land()
    other.to_stage("main")
    before = db_snapshot(app)
    # W2 quotes W1's trial id and nonce: W1's trial is not in W2's session.
    body = in_main.answer_body()
    _rejected(app, other.post("/api/session/answer", body), 404, "trial_not_found")
    # W2 uses W1's CSRF token with its own session.
    r = other.client.post("/api/session/answer", json=other.answer_body(), headers={"X-CSRF-Token": in_main.csrf})
    _rejected(app, r, 403, "csrf_failed")
    assert db_snapshot(app) == before


def test_missing_csrf_header(app, in_main):
    before = db_snapshot(app)
    _rejected(app, in_main.post("/api/session/answer", in_main.answer_body(), csrf=False), 403, "csrf_failed")
    assert db_snapshot(app) == before


def test_missing_csrf_on_consent(app, client):
    p = Participant(app, client)
    p.land()
    before = db_snapshot(app)
    _rejected(app, p.post("/api/session/consent", {"consent": True}, csrf=False), 403, "csrf_failed")
    assert db_snapshot(app) == before


def test_no_session_is_401(app):
    fresh = app.test_client()
    before = db_snapshot(app)
    _rejected(app, fresh.get("/api/session"), 401, "no_session")
    _rejected(app, fresh.post("/api/session/answer", json={}, headers={"X-CSRF-Token": "x"}), 401)
    _rejected(app, fresh.get("/api/session", headers={"X-Session-Token": "tampered.token.value"}), 401)
    assert db_snapshot(app) == before


@pytest.mark.parametrize(
    "raw,ctype,status,code",
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"[1, 2, 3]", "application/json", 400, "malformed_json"),
        (b"trial_id=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies(app, in_main, raw, ctype, status, code):
    before = db_snapshot(app)
    r = in_main.client.post("/api/session/answer", data=raw, content_type=ctype, headers={"X-CSRF-Token": in_main.csrf})
    _rejected(app, r, status, code)
    assert db_snapshot(app) == before


@pytest.mark.parametrize(
    "change,field",
    [
        ({"trial_id": "12"}, "trial_id"),
        ({"trial_id": True}, "trial_id"),
        ({"answer": 1}, "answer"),
        ({"answer": "maybe"}, "answer"),
        ({"response_time_ms": -5}, "response_time_ms"),
        ({"play_counts": [1]}, "play_counts"),
        ({"play_counts": "1,1"}, "play_counts"),
        ({"nonce": None}, "nonce"),
    ],
)
def test_wrong_types_and_values(app, in_main, change, field):
    before = db_snapshot(app)
    body = {**in_main.answer_body(answer="same"), **change}
    err = _rejected(app, in_main.post("/api/session/answer", body), 422, "invalid_fields")
    assert field in err["error"]["fields"]
    assert db_snapshot(app) == before


def test_missing_fields(app, in_main):
    before = db_snapshot(app)
    err = _rejected(app, in_main.post("/api/session/answer", {"answer": "same"}), 422)
    assert set(err["error"]["fields"]) >= {"trial_id", "nonce", "response_time_ms", "play_counts"}
    assert db_snapshot(app) == before


def test_huge_body_is_413(app, in_main):
    before = db_snapshot(app)
    body = in_main.answer_body()
    body["client"] = {"junk": "x" * (app.config["MAX_CONTENT_LENGTH"] + 10)}
    _rejected(app, in_main.post("/api/session/answer", body), 413)
    assert db_snapshot(app) == before


def test_answer_in_wrong_stage_and_step_out_of_order(app, client):
    p = Participant(app, client)
    p.land()
    before = db_snapshot(app)
    _rejected(app, p.post("/api/session/instructions"), 409, "wrong_stage")
    _rejected(app, p.post("/api/session/consent", {"consent": False}), 422, "consent_required")
    assert db_snapshot(app) == before
    p.to_stage("volume")
    snap = db_snapshot(app)
    assert p.post("/api/session/consent", {"consent": True}).status_code == 200  # repeat: no-op
    assert db_snapshot(app) == snap


@pytest.mark.parametrize(
    "params",
    [
        {"workerId": "W1", "assignmentId": "A1", "hitId": "H1", "turkSubmitTo": "https://evil.example.com"},
        {"workerId": "W 1<script>", "assignmentId": "A1", "hitId": "H1"},
        {"PROLIFIC_PID": "P1"},
    ],
)
def test_bad_platform_params(app, client, params):
    before = db_snapshot(app)
    r = client.post("/api/experiments/demo/sessions", json={"params": params})
    _rejected(app, r, 422, "invalid_platform_params")
    assert db_snapshot(app) == before


def test_unknown_experiment(app, client):
    before = db_snapshot(app)
    _rejected(app, client.post("/api/experiments/nope/sessions", json={"params": {}}), 404)
    assert db_snapshot(app) == before


def test_unknown_route_and_method_are_json(app, client):
    _rejected(app, client.get("/api/does-not-exist"), 404)
    _rejected(app, client.get("/api/session/answer"), 405)
