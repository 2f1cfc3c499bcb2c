"""The hot paths stay cheap: a bounded number of SQL statements per request, and no ORM.

GET /api/session is one SELECT (the session, its open trial and the trial's clips);
POST /api/session/answer is at most 7 statements on SQLite: the session with the
answered trial and the tracks, INSERT response, UPDATE trial, UPDATE track (adaptive
trials only), INSERT trial, INSERT audio tokens, UPDATE session. On PostgreSQL the
lock and the read go straight to psycopg in one pipeline (not seen by SQLAlchemy's
events here) and the answer is one statement (mark the trial, insert the response);
what PostgreSQL costs is round trips, which test_round_trips.py counts on the wire.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Mapper

from listening_test.db import db
from tests.listening_test.lt_helpers import Participant, participant_at, pg_app, upgrade_with_demo

SERVE_MAX = 1
ANSWER_MAX = {"sqlite": 7, "postgresql": 6}
ANSWER_WRITES_MAX = 6


@contextmanager
def counted(app):
    statements: list[str] = []
    with app.app_context():
        engine = db.engine

    def before(conn, cursor, statement, *args):
        statements.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


@contextmanager
def no_orm_loads():
    """Fail if a request builds ORM instances from rows (the hot path reads with Core)."""
    loaded: list[str] = []

    def on_load(target, context):
        loaded.append(type(target).__name__)

    event.listen(Mapper, "load", on_load)
    try:
        yield loaded
    finally:
        event.remove(Mapper, "load", on_load)


def _check_budget(app, client, p: Participant, dialect: str) -> None:
    p.land()
    p.to_stage("main")
    p.answer()  # warm the per-process caches (ladders, experiment settings)
    for _ in range(6):  # adaptive and catch trials alike
        with no_orm_loads() as loaded, counted(app) as serve:
            assert client.get("/api/session").status_code == 200
        assert not loaded, loaded
        assert not [s for s in serve if s in ("INSERT", "UPDATE", "DELETE")]  # serving is a read
        assert len([s for s in serve if s != "BEGIN"]) <= SERVE_MAX, serve
        body = p.answer_body()  # the helper's oracle query, outside the count
        with no_orm_loads() as loaded, counted(app) as answer:
            r = p.post("/api/session/answer", body)
        assert r.status_code == 200, r.get_json()
        assert not loaded, loaded
        assert answer.count("BEGIN") <= 1, answer  # one transaction
        assert len([s for s in answer if s != "BEGIN"]) <= ANSWER_MAX[dialect], answer
        writes = [s for s in answer if s in ("INSERT", "UPDATE", "WITH")]  # PostgreSQL: WITH marked AS (UPDATE) INSERT
        assert writes, answer  # the writes are seen (on PostgreSQL they go straight to psycopg: db._announce)
        assert len(writes) <= ANSWER_WRITES_MAX, answer


def test_serving_and_answering_query_budget(app, client):
    _check_budget(app, client, Participant(app, client), "sqlite")


def test_duplicate_submit_is_a_read(app, client):
    p = participant_at(app, "main", client)
    body = p.answer_body(answer="same")
    assert p.post("/api/session/answer", body).status_code == 200
    with counted(app) as again:
        r = p.post("/api/session/answer", body)
    assert r.status_code == 200 and r.get_json()["duplicate"] is True
    assert not [s for s in again if s in ("INSERT", "UPDATE", "DELETE")], again
    assert len([s for s in again if s != "BEGIN"]) <= 3, again


@pytest.fixture
def pg(pg_schema, manifest_path):
    app = upgrade_with_demo(pg_app(pg_schema), manifest_path)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.mark.postgres
def test_postgres_query_budget(pg):
    client = pg.test_client()
    _check_budget(pg, client, Participant(pg, client), "postgresql")
