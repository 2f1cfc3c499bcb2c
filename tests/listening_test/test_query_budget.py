"""The hot paths stay cheap: a bounded number of SQL statements per request."""
from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event

from listening_test.db import db
from lt_helpers import Participant


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


def test_serving_and_answering_query_budget(app, client):
    p = Participant(app, client)
    p.land()
    p.to_stage("main")
    p.answer()  # warm the per-process ladder cache
    with counted(app) as serve:
        assert client.get("/api/session").status_code == 200
    assert not [s for s in serve if s in ("INSERT", "UPDATE", "DELETE")]  # serving is a read
    assert len([s for s in serve if s != "BEGIN"]) <= 4, serve
    with counted(app) as answer:
        p.answer()
    writes = [s for s in answer if s in ("INSERT", "UPDATE")]
    assert answer.count("BEGIN") <= 2, answer  # the helper's oracle query + one transaction
    assert len([s for s in answer if s != "BEGIN"]) <= 12, answer
    assert len(writes) <= 7, answer
