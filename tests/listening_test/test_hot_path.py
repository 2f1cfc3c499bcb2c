"""The serving hot path on SQLite: GET /api/session reads without the write lock."""

from __future__ import annotations

import sqlite3

from sqlalchemy import event

from listening_test.db import db, write_queue
from tests.listening_test.lt_helpers import Participant, wait_for


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
    # 12 commits asked for two checkpoints: the second may still be running, and a PASSIVE
    # checkpoint of our own would then report busy (SQLite runs one checkpoint at a time).
    assert checkpointer.wait_idle(10)
    assert on_request_thread == []
    # After the checkpointer has run, a further PASSIVE checkpoint finds nothing left to copy.
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


def test_wal_checkpointer_never_creates_a_deleted_database(tmp_path):
    """A database file deleted while the app runs is not replaced by an empty one."""
    from listening_test.db import WalCheckpointer

    path = tmp_path / "gone.sqlite"
    checkpointer = WalCheckpointer(str(path))
    checkpointer.request()
    assert wait_for(lambda: checkpointer.completed == 1)
    assert not path.exists()


def test_wal_checkpointer_handles_odd_file_names(tmp_path):
    """The checkpointer's URI quotes the path: '?', '#', '%' and spaces name the same file."""
    from sqlalchemy import URL

    path = tmp_path / "odd ?#%20name.sqlite"
    engine, checkpointer = _configured_engine_with_a_row(URL.create("sqlite", database=str(path)))
    assert checkpointer is not None
    checkpointer.request()
    assert wait_for(lambda: checkpointer.completed == 1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("odd")) == [
        "odd ?#%20name.sqlite",
        "odd ?#%20name.sqlite-shm",
        "odd ?#%20name.sqlite-wal",
        "odd ?#%20name.sqlite-writelock",
    ]
    raw = sqlite3.connect(path)  # the frames were copied into this very file
    try:
        busy, log_frames, checkpointed = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and log_frames > 0 and checkpointed == log_frames
    finally:
        raw.close()
        engine.dispose()


def test_wal_checkpointer_thread_ends_when_idle(monkeypatch, tmp_path):
    """An engine no longer used leaves no thread behind (tests and scripts create many);
    a later request starts a new one."""
    from listening_test import db as db_module

    # Idle for 1 s: long enough that no thread can end before this test has seen it start,
    # however slowly a loaded machine runs the lines in between (at 0.05 s, one could).
    monkeypatch.setattr(db_module, "SQLITE_CHECKPOINT_IDLE_S", 1.0)
    checkpointers = [db_module.WalCheckpointer(str(tmp_path / f"{i}.sqlite")) for i in range(5)]
    threads = []
    for checkpointer in checkpointers:
        checkpointer.request()
        threads.append(checkpointer._thread)
    assert all(t is not None for t in threads)
    assert wait_for(lambda: all(c.completed == 1 for c in checkpointers))
    assert wait_for(lambda: not any(t.is_alive() for t in threads if t is not None))
    assert all(c._thread is None for c in checkpointers)
    checkpointers[0].request()
    assert wait_for(lambda: checkpointers[0].completed == 2)


def test_dispose_waits_for_a_checkpoint_in_flight(tmp_path):
    """A copy of the file taken right after ``engine.dispose()`` holds every commit, even
    when the checkpointer's own connection was open at that moment (it kept the pool's
    last close from checkpointing and removing the WAL)."""
    import shutil
    import threading

    path = tmp_path / "copied.sqlite"
    engine, checkpointer = _configured_engine_with_a_row(f"sqlite:///{path}")
    assert checkpointer is not None
    inside, go_on = threading.Event(), threading.Event()

    def slow_checkpoint() -> None:  # holds a connection open, as a checkpoint of a large WAL does
        connection = sqlite3.connect(path)
        try:
            inside.set()
            go_on.wait(10)
        finally:
            connection.close()

    checkpointer._checkpoint = slow_checkpoint
    checkpointer.request()
    assert inside.wait(10)
    threading.Timer(0.2, go_on.set).start()
    engine.dispose()
    assert not (tmp_path / "copied.sqlite-wal").exists()
    shutil.copy(path, tmp_path / "copy.sqlite")
    raw = sqlite3.connect(tmp_path / "copy.sqlite")
    try:
        assert raw.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        raw.close()


def test_an_apps_own_pool_class_gets_no_pool_sizes(tmp_path):
    """NullPool and StaticPool take no pool_size/max_overflow (create_engine raised TypeError)."""
    from sqlalchemy.pool import NullPool, QueuePool, StaticPool

    from listening_test import create_app
    from listening_test.db import pool_options

    url = f"sqlite:///{tmp_path / 'own.sqlite'}"
    assert pool_options(url, 16, NullPool) == {}
    assert pool_options(url, 16, StaticPool) == {}
    assert pool_options("sqlite://", 16, QueuePool) == {"pool_size": 16, "max_overflow": 16}
    for poolclass in (NullPool, StaticPool):
        app = create_app(
            {"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "SQLALCHEMY_ENGINE_OPTIONS": {"poolclass": poolclass}}
        )
        with app.app_context():
            assert isinstance(db.engine.pool, poolclass)
            db.engine.dispose()


def test_a_bad_database_url_is_a_config_error_without_the_password():
    import pytest

    from listening_test import create_app
    from listening_test.config import ConfigError

    with pytest.raises(ConfigError, match=r"DATABASE_URL names an unknown database 'postgres' \(PostgreSQL is") as info:
        create_app({"SQLALCHEMY_DATABASE_URI": "postgres://user:hunter2@host/db", "TESTING": True})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="DATABASE_URL is not a database URL"):
        create_app({"SQLALCHEMY_DATABASE_URI": "hunter2", "TESTING": True})


def _configured_engine_with_a_row(url):
    """An engine set up as the app's (``configure_engine``), its table t holding one row; and its checkpointer."""
    from sqlalchemy import create_engine, text

    from listening_test import db as db_module

    engine = create_engine(url)
    db_module.configure_engine(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    return engine, db_module.wal_checkpointer(engine)


def test_no_flask_cookie_session(app, client):
    """jndlab keeps nothing in Flask's cookie session (issue 18: opening it cost ~5 % of an
    answer): no request opens or sets it, and writing to it raises instead of silently
    signing a cookie."""
    import flask
    import pytest

    p = Participant(app, client, {"PROLIFIC_PID": "nocookie", "STUDY_ID": "S", "SESSION_ID": "X"})
    reply = client.post(
        "/api/experiments/demo/sessions", json={"params": {"PROLIFIC_PID": "nc2", "STUDY_ID": "S", "SESSION_ID": "Y"}}
    )
    assert reply.status_code == 201
    cookies = [h for h in reply.headers.getlist("Set-Cookie")]
    assert cookies and all(c.startswith("jndlab_session=") for c in cookies)
    p.land()
    p.to_stage("main")
    p.answer()
    with app.test_request_context("/"):
        assert not flask.session  # empty, and never read from a cookie
        with pytest.raises(RuntimeError, match="session is unavailable"):
            flask.session["x"] = 1
