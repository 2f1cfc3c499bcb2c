"""The serving hot path on SQLite: GET /api/session reads without the write lock."""

from __future__ import annotations

import sqlite3

from sqlalchemy import event

from listening_test.db import db, write_queue
from tests.listening_test.lt_helpers import Participant


def _db_path(app) -> str:
    with app.app_context():
        return db.engine.url.database


def test_serving_a_trial_does_not_queue_for_the_sqlite_write_lock(app, client):
    p = Participant(app, client)
    p.land()
    p.to_stage("main")
    trial = p.state["trial"]
    begins: list[str] = []
    with app.app_context():
        engine = db.engine

    def before(conn, cursor, statement, *args):
        if statement.startswith("BEGIN"):
            begins.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    # Another writer holds the write lock for the whole GET: a deferred read still runs.
    blocker = sqlite3.connect(_db_path(app), isolation_level=None, timeout=0.1)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        r = client.get("/api/session")
        assert r.status_code == 200 and r.get_json()["state"]["trial"] == trial
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    try:
        p.answer()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    assert begins[0] == "BEGIN"  # the GET: deferred
    assert begins[-1] == "BEGIN IMMEDIATE"  # the answer: a write, serialised up front


def test_write_queue_orders_one_process_writers_and_never_leaks(app):
    """Concurrent answers from several participants: all recorded, the queue released after each."""
    from concurrent.futures import ThreadPoolExecutor

    participants = []
    for i in range(6):
        p = Participant(app, app.test_client(), {"workerId": f"Q{i}", "assignmentId": f"QA{i}", "hitId": "H"})
        p.land()
        p.to_stage("main")
        participants.append(p)
    with app.app_context():
        queue = write_queue(db.engine)
    bodies = [(p, p.answer_body()) for p in participants]

    def submit(item):
        p, body = item
        r = app.test_client().post(
            "/api/session/answer", json=body, headers={"X-CSRF-Token": p.csrf, "X-Session-Token": p.token}
        )
        return r.status_code, r.get_json()["duplicate"]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(submit, bodies))
    assert results == [(200, False)] * 6
    assert not queue.held


def test_write_queue_does_not_wait_for_its_own_thread():
    from listening_test.db import WriteQueue

    queue = WriteQueue(timeout_s=5)
    first, second = object(), object()
    queue.acquire(first)
    queue.acquire(second)  # the same thread, another connection: straight through, no self-deadlock
    assert queue.held
    queue.release(second)  # not the holder: a no-op
    assert queue.held
    queue.release(first)
    assert not queue.held
