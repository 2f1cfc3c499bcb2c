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


def test_wal_checkpoints_run_off_the_request_thread(tmp_path, monkeypatch):
    """Every SQLITE_CHECKPOINT_EVERY write commits a PASSIVE checkpoint runs on its own
    thread: the committing thread never runs one (inline, it cost that request ~5 ms),
    and the WAL's frames end up in the database file."""
    import threading
    import time

    from sqlalchemy import create_engine, text

    from listening_test import db as db_module

    monkeypatch.setattr(db_module, "SQLITE_CHECKPOINT_EVERY", 5)
    engine = create_engine(f"sqlite:///{tmp_path / 'wal.sqlite'}")
    db_module.configure_engine(engine)
    checkpointer = db_module.wal_checkpointer(engine)
    assert checkpointer is not None
    on_request_thread = []  # checkpoints run on the app's own connections (SQLite's trace callback)

    def trace(dbapi_connection, _record):
        def record(statement):
            if "wal_checkpoint" in statement:
                on_request_thread.append(threading.current_thread().name)

        dbapi_connection.set_trace_callback(record)

    event.listen(engine, "connect", trace)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    for i in range(12):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": i})
    deadline = time.monotonic() + 10
    while checkpointer.completed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.completed >= 1
    assert on_request_thread == []
    # After the checkpointer has run, a further PASSIVE checkpoint finds little or nothing left to copy.
    raw = sqlite3.connect(tmp_path / "wal.sqlite")
    try:
        busy, log_frames, checkpointed = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and checkpointed == log_frames
        assert raw.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 12
    finally:
        raw.close()
        engine.dispose()


def test_wal_checkpointer_survives_a_missing_database(tmp_path):
    """A checkpoint that fails (the file is gone) is skipped; the next request runs again."""
    import time

    from listening_test.db import WalCheckpointer

    checkpointer = WalCheckpointer(str(tmp_path / "missing" / "x.sqlite"))
    checkpointer.request()
    deadline = time.monotonic() + 10
    while checkpointer.completed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.completed == 1
    checkpointer.request()
    while checkpointer.completed < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checkpointer.completed == 2


def test_pool_keeps_a_connection_per_gunicorn_thread(tmp_path, monkeypatch):
    """8 requests at once (serve's threads per worker), twice: the second round opens no
    connection (SQLAlchemy's default pool of 5 would close 3 and open them again, on
    PostgreSQL a new server process each on the answers' path)."""
    from contextlib import ExitStack

    from listening_test import create_app

    monkeypatch.delenv("DATABASE_POOL_SIZE", raising=False)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'pool.sqlite'}", "TESTING": True})
    with app.app_context():
        engine = db.engine
    opened = []
    event.listen(engine, "connect", lambda *_: opened.append(1))
    for _ in range(2):
        with ExitStack() as stack:
            for _ in range(8):
                stack.enter_context(engine.connect())
    assert len(opened) == 8
    engine.dispose()


def test_pool_size_setting_and_an_apps_own_engine_options(tmp_path, monkeypatch):
    from listening_test import create_app
    from listening_test.db import pool_options

    assert pool_options("sqlite:///:memory:", 16) == {}  # one connection per thread: no QueuePool
    assert pool_options("sqlite://", 16) == {}
    assert pool_options(f"sqlite:///{tmp_path / 'x.sqlite'}", 16) == {"pool_size": 16, "max_overflow": 16}
    assert pool_options("postgresql+psycopg://u@h/db", 4) == {"pool_size": 4, "max_overflow": 4}
    monkeypatch.setenv("DATABASE_POOL_SIZE", "3")
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'a.sqlite'}", "TESTING": True})
    with app.app_context():
        assert db.engine.pool.size() == 3
        db.engine.dispose()
    own = {"SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 7}}
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'b.sqlite'}", "TESTING": True, **own})
    with app.app_context():
        assert db.engine.pool.size() == 7  # the app's own setting wins
        db.engine.dispose()
