"""The SQLite driver path of ``db.execute_write`` and ``db.fetch_all`` (d51a36e): the same
rows as ``Connection.execute`` over the app's own schema and statements, SQLAlchemy's
execution wherever something set up needs it (statement logging, listeners that keep
state on the execution context, ``handle_error``), writes that never leave the request's
transaction, and the same HTTP replies for database errors during an answer."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    literal_column,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.types import JSON

from listening_test import db as db_module
from listening_test import schema
from listening_test.db import db
from listening_test.store import sessions
from tests.listening_test.lt_helpers import (
    add_demo_experiment,
    participant_at,
    pg_app,
    template_copy_app,
    upgrade_with_demo,
)


def _engine(tmp_path, name: str, configured: bool = True, **options):
    """A SQLite file database holding table "t" (id, label unique, payload JSON, flag);
    ``configured``: set up as the app's engine (``configure_engine``: isolation_level None,
    BEGIN IMMEDIATE, the write queue)."""
    metadata = MetaData()
    table = Table(
        "t",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("label", String(16), unique=True),
        Column("payload", JSON),
        Column("flag", Boolean),
    )
    engine = create_engine(f"sqlite:///{tmp_path / f'{name}.sqlite'}", **options)
    if configured:
        db_module.configure_engine(engine)
    metadata.create_all(engine)
    return engine, table


def _ids(engine, table) -> list[int]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(select(table.c.id).order_by(table.c.id))]


# --- rows: the app's schema and statements -------------------------------------------------


def test_fetch_all_is_connection_execute_over_the_app_schema(app):
    """A participant's real rows (sessions, tracks, trials, clips, answers, NULLs from outer
    joins, JSON, booleans, UTC datetimes, 63-bit seeds): ``fetch_all`` on the driver path
    gives exactly the values and types ``Connection.execute`` gives, for the two answer-path
    SELECTs and for every table of the schema."""
    p = participant_at(app, "main")
    p.answer()
    trial_id = p.state["trial"]["id"]
    with app.app_context():
        conn = db.session.connection()
        assert conn.in_transaction() and db_module._straight_to_sqlite(conn, False)
        public_id = conn.execute(select(schema.sessions.c.public_id)).scalar_one()
        statements = [
            (sessions._SELECT_FOR_ANSWER, {"public_id": public_id, "trial_id": trial_id}),
            (sessions._SELECT_FOR_ANSWER, {"public_id": public_id, "trial_id": -1}),  # NULL trial columns
            (sessions._SELECT_WITH_OPEN_TRIAL, {"public_id": public_id}),
            (sessions._SELECT_WITH_OPEN_TRIAL, {"public_id": "nobody"}),
        ] + [(select(table), {}) for table in schema.metadata.sorted_tables]
        for statement, params in statements:
            expected = [tuple(row) for row in conn.execute(statement, params)]
            got = db_module.fetch_all(statement, params, conn)
            assert got == expected
            assert [list(map(type, row)) for row in got] == [list(map(type, row)) for row in expected]
        db.session.rollback()


def test_fetch_all_lets_sqlalchemy_match_columns_by_name(tmp_path):
    """A ``*``, a text() column or a literal_column naming two columns is not one cursor
    column per result column: SQLAlchemy matches them by name. ``fetch_all`` gave a
    ValueError from zip(strict=True) for these; now it hands them to SQLAlchemy."""
    engine, table = _engine(tmp_path, "names", configured=False)
    queries = [
        select(table.c.payload, literal_column("*")).select_from(table),
        select(table.c.payload, text("t.id, t.flag")).select_from(table),
        select(table.c.payload, literal_column("t.id, t.flag")).select_from(table),
        select(table.c.payload, table.c.flag).order_by(table.c.id),  # still the driver path
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(table), [{"id": 1, "payload": {"a": [1]}, "flag": True}, {"id": 2, "payload": None, "flag": None}]
        )
        for query in queries:
            assert db_module.fetch_all(query, {}, conn) == [tuple(row) for row in conn.execute(query)]
    assert db_module._prepared(queries[0], engine.dialect, (), False) is None
    assert db_module._prepared(queries[-1], engine.dialect, (), False) is not None
    engine.dispose()


# --- what needs SQLAlchemy's execution gets it -------------------------------------------------


def test_record_queries_answers_on_sqlite(tmp_path, template_db, manifest_path):
    """Flask-SQLAlchemy's SQLALCHEMY_RECORD_QUERIES keeps a start time on the execution
    context in a before_cursor_execute listener; the driver path gave it None, so every
    answer failed with AttributeError (500). Its after_cursor_execute listener now sends
    those statements through SQLAlchemy."""
    app = template_copy_app(template_db, tmp_path / "recorded.sqlite", SQLALCHEMY_RECORD_QUERIES=True)
    with app.app_context():
        add_demo_experiment(manifest_path)
    p = participant_at(app, "main")
    for _ in range(3):
        p.answer()
    with app.app_context():
        db.engine.dispose()


@pytest.mark.postgres
def test_record_queries_answers_on_postgresql(pg_schema, manifest_path):
    """The same on PostgreSQL, whose answer path sends its reads and writes in psycopg
    pipelines (db.pg_pipeline_fetch, the deferred writes) and gave the listener None too
    (500 on every answer, before the SQLite driver path existed). With an
    after_cursor_execute listener set up they go through SQLAlchemy one by one, in the same
    transaction; answers, trials and a racing duplicate are stored or refused as usual."""
    app = upgrade_with_demo(pg_app(pg_schema, SQLALCHEMY_RECORD_QUERIES=True), manifest_path)
    try:
        p = participant_at(app, "main")
        with app.app_context():
            before = db.session.execute(text("SELECT COUNT(*) FROM responses")).scalar_one()
        for _ in range(3):
            p.answer()  # asserts 200
        body = p.answer_body()
        assert p.post("/api/session/answer", body).status_code == 200
        resubmitted = p.post("/api/session/answer", body)  # read-only: the COMMIT path of pg_pipeline_fetch
        assert resubmitted.status_code == 200 and resubmitted.get_json()["duplicate"] is True
        other = "same" if body["answer"] == "different" else "different"
        assert p.post("/api/session/answer", {**body, "answer": other}).status_code == 409
        with app.app_context():
            assert db.session.execute(text("SELECT COUNT(*) FROM responses")).scalar_one() == before + 4
            assert db.session.execute(text("SELECT COUNT(*) FROM trials WHERE NOT answered")).scalar_one() == 1
    finally:
        with app.app_context():
            db.engine.dispose()


def test_logging_and_context_listeners_see_every_statement(tmp_path, caplog):
    """Statement logging (echo), after_cursor_execute and handle_error listeners see the
    statements ``execute_write`` and ``fetch_all`` run in a begun transaction, with an
    execution context, as ``Connection.execute`` would show them; with only a
    before_cursor_execute listener the statements take the driver path (context None)."""
    engine, table = _engine(tmp_path, "seen")
    contexts: list[bool] = []
    errors: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if not statement.startswith("BEGIN"):  # the engine's own BEGIN IMMEDIATE
            contexts.append(context is not None)

    def after(conn, cursor, statement, parameters, context, executemany):
        pass

    def handle_error(context):
        errors.append(type(context.original_exception).__name__)

    def run() -> None:
        with engine.begin() as conn:
            db_module.execute_write(insert(table), {"id": 1, "label": "a"}, conn)
            db_module.execute_write(insert(table), [{"id": 2, "label": "b"}, {"id": 3, "label": "c"}], conn)
            assert db_module.fetch_all(select(table.c.label).order_by(table.c.id), {}, conn) == [("a",), ("b",), ("c",)]
            with pytest.raises(sa_exc.IntegrityError):
                db_module.execute_write(insert(table), {"id": 4, "label": "a"}, conn)
            conn.rollback()

    event.listen(engine, "before_cursor_execute", before)
    run()
    assert contexts == [False] * 4  # the driver path
    contexts.clear()
    event.listen(engine, "after_cursor_execute", after)
    run()
    assert contexts == [True] * 4
    event.remove(engine, "after_cursor_execute", after)
    contexts.clear()
    event.listen(engine, "handle_error", handle_error)
    run()
    assert contexts == [True] * 4 and errors == ["IntegrityError"]
    event.remove(engine, "handle_error", handle_error)
    contexts.clear()
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine.Engine"):
        run()
    assert contexts == [True] * 4
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy.engine")]
    assert sum(m.startswith("INSERT INTO t") for m in logged) == 3 and any(
        m.startswith("SELECT t.label") for m in logged
    )
    engine.dispose()


def test_driver_errors_hide_parameters_as_the_engine_says(tmp_path):
    """An engine made with hide_parameters=True keeps values out of error messages (logs);
    the driver path's IntegrityError showed them."""
    engine, table = _engine(tmp_path, "hidden", hide_parameters=True)
    with engine.begin() as conn:
        db_module.execute_write(insert(table), {"id": 1, "label": "secret-worker"}, conn)
        with pytest.raises(sa_exc.IntegrityError) as raised:
            db_module.execute_write(insert(table), {"id": 2, "label": "secret-worker"}, conn)
        conn.rollback()
    assert "secret-worker" not in str(raised.value) and "hidden" in str(raised.value)
    engine.dispose()


# --- transactions ---------------------------------------------------------------------------------


def test_driver_path_writes_stay_in_the_transaction(tmp_path):
    """On the app's engine (isolation_level None, its own BEGIN IMMEDIATE), writes sent to
    sqlite3 are the transaction's: invisible to another connection until the commit, undone
    by a rollback, by a savepoint's rollback, and after a failed statement; a write before
    any BEGIN goes through SQLAlchemy, which begins one."""
    engine, table = _engine(tmp_path, "tx")
    path = str(tmp_path / "tx.sqlite")
    ins = insert(table)
    with engine.connect() as conn:
        db_module.execute_write(ins, {"id": 1, "label": "a"}, conn)  # begins the transaction
        db_module.execute_write(ins, {"id": 2, "label": "b"}, conn)  # the driver path
        assert conn.connection.driver_connection.in_transaction
        other = sqlite3.connect(path)
        assert other.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)  # not committed
        other.close()
        conn.rollback()
        db_module.execute_write(ins, {"id": 3, "label": "c"}, conn)
        savepoint = conn.begin_nested()
        db_module.execute_write(ins, {"id": 4, "label": "d"}, conn)
        savepoint.rollback()
        with pytest.raises(sa_exc.IntegrityError):
            db_module.execute_write(ins, {"id": 5, "label": "c"}, conn)  # a statement's error keeps the transaction
        db_module.execute_write(ins, {"id": 6, "label": "f"}, conn)
        conn.commit()
        db_module.execute_write(ins, {"id": 7, "label": "g"}, conn)
        db_module.execute_write(ins, {"id": 8, "label": "h"}, conn)
        conn.rollback()
    assert _ids(engine, table) == [3, 6]
    engine.dispose()


def test_no_write_after_sqlite_rolled_the_transaction_back(tmp_path):
    """An interrupted write makes SQLite roll the whole transaction back itself, while
    SQLAlchemy's stays open. The next write ran in autocommit and outlived the rollback
    (row 3 kept, row 1 lost; so before d51a36e too, through exec_driver_sql); the driver
    path now refuses it."""
    engine, table = _engine(tmp_path, "interrupted")
    ins = insert(table)
    with engine.connect() as conn:
        conn.begin()
        db_module.execute_write(ins, {"id": 1, "label": "a"}, conn)
        raw = conn.connection.driver_connection
        raw.set_progress_handler(lambda: 1, 1)
        with pytest.raises(sa_exc.OperationalError, match="interrupted"):
            db_module.execute_write(ins, {"id": 2, "label": "b"}, conn)
        raw.set_progress_handler(None, 1)
        assert conn.in_transaction() and not raw.in_transaction
        with pytest.raises(sa_exc.PendingRollbackError):
            db_module.execute_write(ins, {"id": 3, "label": "c"}, conn)
        conn.rollback()
        db_module.execute_write(ins, {"id": 4, "label": "d"}, conn)  # a new transaction writes again
        conn.commit()
    assert _ids(engine, table) == [4]
    engine.dispose()
    plain, table = _engine(tmp_path, "autocommit", configured=False)
    with plain.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        db_module.execute_write(insert(table), {"id": 5, "label": "e"}, conn)  # asked for: no refusal
        db_module.execute_write(insert(table), {"id": 6, "label": "f"}, conn)
    assert _ids(plain, table) == [5, 6]
    plain.dispose()


# --- errors through the web app ---------------------------------------------------------------


def test_racing_duplicate_answer_on_the_driver_path_is_a_409(app):
    """Another writer stored an answer for the open trial but has not marked it answered
    (a racing twin): the answer's INSERT, sent to sqlite3, breaks UNIQUE(responses.trial_id)
    and the reply is 409 ``conflict``, with nothing of the request stored."""
    p = participant_at(app, "main")
    body = p.answer_body()
    with app.app_context():
        conn = db.session.connection()
        session_id = conn.execute(select(schema.sessions.c.id)).scalar_one()
        conn.execute(
            insert(schema.responses),
            {
                "trial_id": body["trial_id"],
                "session_id": session_id,
                "trial_index": 0,
                "answer": "same",
                "response_time_ms": 1,
                "play_counts": [],
            },
        )
        db.session.commit()
    with app.app_context():
        conn_rows = db.session.execute(text("SELECT COUNT(*), MAX(id) FROM trials")).one()
        before = db.session.execute(text("SELECT stage, n_trials FROM sessions")).one()
    r = p.post("/api/session/answer", body)
    assert r.status_code == 409 and r.get_json()["error"]["code"] == "conflict"
    with app.app_context():
        assert db.session.execute(text("SELECT COUNT(*), MAX(id) FROM trials")).one() == conn_rows
        assert db.session.execute(text("SELECT stage, n_trials FROM sessions")).one() == before
        assert (
            db.session.execute(text("SELECT answered FROM trials WHERE id = :i"), {"i": body["trial_id"]}).scalar() == 0
        )


@pytest.mark.postgres
def test_pg_pipeline_fetch_reads_what_connection_execute_reads(pg_schema, manifest_path):
    """db.pg_pipeline_fetch compiles its SELECTs with ``_prepared``, as the writes are
    compiled: the answer path's own SELECT gives the rows ``Connection.execute`` gives, in
    one pipeline that opens the transaction; a SELECT ``_prepared`` cannot send itself
    (expanding IN parameters) is refused with a clear ValueError, not sent half-compiled."""
    from sqlalchemy import bindparam

    app = upgrade_with_demo(pg_app(pg_schema), manifest_path)
    try:
        p = participant_at(app, "main")
        trial_id = p.state["trial"]["id"]
        with app.test_request_context():
            public_id = db.session.execute(text("SELECT public_id FROM sessions")).scalar_one()
            db.session.rollback()
            params = {"public_id": public_id, "trial_id": trial_id}
            locked, rows = db_module.pg_pipeline_fetch(
                (sessions._LOCK_SESSION, params), (sessions._SELECT_FOR_ANSWER, params)
            )
            expected = [tuple(r) for r in db_module.connection().execute(sessions._SELECT_FOR_ANSWER, params)]
            assert len(locked) == 1 and rows == expected and len(rows) >= 1
            db.session.rollback()
        with app.test_request_context():
            by_ids = select(schema.trials.c.id).where(schema.trials.c.id.in_(bindparam("ids", expanding=True)))
            with pytest.raises(ValueError, match="pg_pipeline_fetch cannot send"):
                db_module.pg_pipeline_fetch((by_ids, {"ids": [trial_id]}))
            db.session.rollback()
    finally:
        with app.app_context():
            db.engine.dispose()
