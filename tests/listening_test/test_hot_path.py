"""The serving hot path on SQLite: GET /api/session reads without the write lock."""
from __future__ import annotations

import sqlite3

from sqlalchemy import event

from listening_test.db import db
from lt_helpers import Participant


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
