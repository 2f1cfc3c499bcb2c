"""Issue 18: the pipelined PostgreSQL answer path keeps issue 14's guarantees when things fail.

- the one-statement answer (mark the trial, insert the response from the marked row)
  refuses a trial that is answered already: IntegrityError, nothing stored;
- a refused answer (403 bad nonce, 409 different resubmit) leaves no open transaction
  and no row lock behind (the connection was checked out in psycopg's autocommit mode
  with our own BEGIN, so the rollback must still reach the server);
- the connection lost between the read and the commit: 503 with Retry-After, nothing of
  the answer stored, the trial still open; the retry records it exactly once;
- a write that breaks a constraint in the deferred pipeline is a 409, nothing stored.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from listening_test import store
from listening_test.db import db
from tests.listening_test.lt_helpers import PG_URL, Participant, make_app, participant_at, upgrade_with_demo

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(pg_schema, manifest_path):
    name = f"jndlab-{uuid.uuid4().hex[:12]}"
    app = make_app(
        PG_URL,
        SQLALCHEMY_ENGINE_OPTIONS={
            "connect_args": {"options": f"-csearch_path={pg_schema}", "application_name": name},
            "pool_size": 2,
        },
    )
    upgrade_with_demo(app, manifest_path)
    other = create_engine(PG_URL, connect_args={"options": f"-csearch_path={pg_schema}"})
    yield app, other, name
    other.dispose()
    with app.app_context():
        db.engine.dispose()


def _counts(other, trial_id: int) -> tuple[int, bool]:
    with other.connect() as c:
        n = c.execute(text("SELECT count(*) FROM responses WHERE trial_id = :t"), {"t": trial_id}).scalar_one()
        answered = c.execute(text("SELECT answered FROM trials WHERE id = :t"), {"t": trial_id}).scalar_one()
    return n, answered


def _no_lock_and_no_open_transaction(other, name: str, public_id: str) -> None:
    with other.connect() as c:
        c.execute(text("SET lock_timeout = '2s'"))
        assert (
            c.execute(text("SELECT id FROM sessions WHERE public_id = :p FOR UPDATE NOWAIT"), {"p": public_id}).first()
            is not None
        )
        c.rollback()
        states = (
            c.execute(text("SELECT state FROM pg_stat_activity WHERE application_name = :n"), {"n": name})
            .scalars()
            .all()
        )
    assert not [s for s in states if s and s.startswith("idle in transaction")], states


def _public_id(p: Participant) -> str:
    from listening_test.web.security import session_public_id_from_request

    with p.app.test_request_context(headers={"X-Session-Token": p.token}):
        return session_public_id_from_request()


def test_answer_statement_refuses_an_answered_trial(pg):
    app, other, _ = pg
    p = participant_at(app, "main")
    trial_id = p.state["trial"]["id"]
    with other.connect() as c:
        c.execute(text("UPDATE trials SET answered = true WHERE id = :t"), {"t": trial_id})
        with pytest.raises(IntegrityError):  # NOT NULL: no marked row to take trial_id from
            c.execute(
                store.answers._RECORD_ANSWER_PG,
                {
                    "mark_trial_id": trial_id,
                    "r_session_id": 1,
                    "r_trial_index": 0,
                    "r_answer": "same",
                    "r_is_correct": None,
                    "r_response_time_ms": 1,
                    "r_play_counts": [1, 1],
                    "r_client_info": {},
                    "r_created_at": None,
                },
            )
        c.rollback()
    assert _counts(other, trial_id) == (0, False)


def test_refused_answers_leave_no_lock_or_transaction(pg):
    app, other, name = pg
    p = participant_at(app, "main")
    public_id = _public_id(p)
    body = p.answer_body(answer="same")
    r = p.post("/api/session/answer", {**body, "nonce": "x" * len(body["nonce"])})
    assert r.status_code == 403
    _no_lock_and_no_open_transaction(other, name, public_id)
    assert p.post("/api/session/answer", body).status_code == 200
    r = p.post("/api/session/answer", {**body, "answer": "different"})
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "already_answered"
    _no_lock_and_no_open_transaction(other, name, public_id)
    r = p.post("/api/session/answer", body)  # the same answer again: a duplicate, ended by a COMMIT
    assert r.status_code == 200 and r.get_json()["duplicate"] is True
    _no_lock_and_no_open_transaction(other, name, public_id)
    assert _counts(other, body["trial_id"]) == (1, True)


def test_connection_lost_before_the_commit_is_503_and_the_retry_records_once(pg, monkeypatch):
    app, other, name = pg
    p = participant_at(app, "main")
    body = p.answer_body()
    save_state = store.save_state

    def lose_connection_then_save(state):
        with other.connect() as c:  # the server ends our backend between the read and the commit
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :n AND state LIKE 'idle in transaction%'"
                ),
                {"n": name},
            )
            c.commit()
        save_state(state)

    monkeypatch.setattr(store, "save_state", lose_connection_then_save)
    r = p.post("/api/session/answer", body)
    assert r.status_code == 503, r.get_json()
    assert r.get_json()["error"]["code"] == "database_unavailable" and "Retry-After" in r.headers
    assert _counts(other, body["trial_id"]) == (0, False)
    monkeypatch.undo()
    r = p.post("/api/session/answer", body)  # the page retries the same answer
    assert r.status_code == 200 and r.get_json()["duplicate"] is False, r.get_json()
    r = p.post("/api/session/answer", body)
    assert r.status_code == 200 and r.get_json()["duplicate"] is True
    assert _counts(other, body["trial_id"]) == (1, True)


def test_a_deferred_write_that_breaks_a_constraint_is_409_and_stores_nothing(pg, monkeypatch):
    app, other, _ = pg
    p = participant_at(app, "main")
    body = p.answer_body()
    load_for_answer = store.load_for_answer

    def reuse_a_trial_id(public_id, trial_id):
        state, trial = load_for_answer(public_id, trial_id)
        object.__setattr__(state, "next_trial_id", trial_id)  # the new trial collides with the answered one
        return state, trial

    monkeypatch.setattr(store, "load_for_answer", reuse_a_trial_id)
    r = p.post("/api/session/answer", body)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "conflict", r.get_json()
    assert _counts(other, body["trial_id"]) == (0, False)
    monkeypatch.undo()
    assert p.post("/api/session/answer", body).status_code == 200
    assert _counts(other, body["trial_id"]) == (1, True)


def test_deferred_writes_reach_a_plain_session_commit(pg):
    """Any commit sends them: code that calls db.session.commit() itself loses nothing."""
    from sqlalchemy import update

    from listening_test.db import defer_write
    from listening_test.models import Session as SessionRow

    app, other, _ = pg
    p = Participant(app, app.test_client())
    p.land()
    public_id = _public_id(p)
    with app.test_request_context():
        defer_write(
            update(SessionRow.__table__).where(SessionRow.__table__.c.public_id == public_id).values(n_trials=77), [{}]
        )
        db.session.commit()
    with other.connect() as c:
        assert (
            c.execute(text("SELECT n_trials FROM sessions WHERE public_id = :p"), {"p": public_id}).scalar_one() == 77
        )
