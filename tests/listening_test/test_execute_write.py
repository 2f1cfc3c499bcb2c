"""``db.execute_write``: the answer path's writes compiled once (issue 18) store exactly
what ``Connection.execute`` stores, raise SQLAlchemy's errors, and hand statements that
need SQLAlchemy's execution back to it; on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.types import JSON

from listening_test import db as db_module
from listening_test.schema import utcnow
from tests.listening_test.lt_helpers import PG_URL


def _table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("label", String(32), nullable=False, unique=True),
        Column("payload", JSON, nullable=False, default=dict),
        Column("flag", Boolean, nullable=False, default=False),
        Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
        Column("note", String(32), default="fresh", onupdate="changed"),
    )


def _sqlite(tmp_path, name: str, table: Table | None = None) -> tuple[Engine, Table]:
    """A new SQLite database ``name`` holding ``table`` (default: ``_table``'s "w")."""
    if table is None:
        table = _table(MetaData(), "w")
    engine = create_engine(f"sqlite:///{tmp_path / f'{name}.sqlite'}")
    table.metadata.create_all(engine)
    return engine, table


@pytest.fixture(params=["sqlite", "postgresql"])
def engine_and_table(request, tmp_path):
    metadata = MetaData()
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
        table = _table(metadata, "w")
    else:
        engine = create_engine(PG_URL)
        try:
            engine.connect().close()
        except sa_exc.OperationalError:
            pytest.skip("PostgreSQL is not reachable")
        table = _table(metadata, f"w_{uuid.uuid4().hex[:10]}")
    metadata.create_all(engine)
    yield engine, table
    metadata.drop_all(engine)
    engine.dispose()


def _rows(conn, table):
    return [tuple(r) for r in conn.execute(select(table).order_by(table.c.id)).all()]


def test_same_rows_as_connection_execute(engine_and_table):
    engine, table = engine_and_table
    ins = insert(table)
    mark = update(table).where(table.c.label == bindparam("which")).values(flag=True)
    with engine.begin() as conn:
        conn.execute(ins, {"id": 1, "label": "a", "payload": {"x": [1, 2]}})
        conn.execute(ins, [{"id": 2, "label": "b"}, {"id": 3, "label": "c"}])
        assert conn.execute(mark, {"which": "a"}).rowcount == 1
        conn.execute(update(table).where(table.c.id == bindparam("row")), {"row": 2, "payload": {"y": None}})
        expected = _rows(conn, table)
        conn.execute(table.delete())
        db_module.execute_write(ins, {"id": 1, "label": "a", "payload": {"x": [1, 2]}}, conn)
        db_module.execute_write(ins, [{"id": 2, "label": "b"}, {"id": 3, "label": "c"}], conn)
        assert db_module.execute_write(mark, {"which": "a"}, conn).rowcount == 1
        assert db_module.execute_write(mark, {"which": "nobody"}, conn).rowcount == 0
        db_module.execute_write(
            update(table).where(table.c.id == bindparam("row")), {"row": 2, "payload": {"y": None}}, conn
        )
        got = _rows(conn, table)
    strip = [(r[0], r[1], r[2], r[3], r[5]) for r in expected]  # created_at differs by the clock
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in got] == strip
    assert [r[5] for r in got] == ["changed", "changed", "fresh"]  # Python-side default and onupdate
    assert all(isinstance(r[4], datetime) for r in got)


def test_errors_are_sqlalchemys(engine_and_table):
    engine, table = engine_and_table
    with engine.connect() as conn:
        db_module.execute_write(insert(table), {"id": 1, "label": "dup"}, conn)
        with pytest.raises(sa_exc.IntegrityError):
            db_module.execute_write(insert(table), {"id": 2, "label": "dup"}, conn)
        conn.rollback()


def test_sqlite_lastrowid_is_the_new_primary_key(tmp_path):
    engine, table = _sqlite(tmp_path, "id")
    with engine.begin() as conn:
        first = db_module.execute_write(insert(table), {"label": "one"}, conn).lastrowid
        second = db_module.execute_write(insert(table), {"label": "two"}, conn).lastrowid
        assert conn.execute(select(table.c.label).where(table.c.id == second)).scalar_one() == "two"
        assert second == first + 1
    engine.dispose()


def test_statements_needing_sqlalchemy_fall_back_to_it(tmp_path):
    engine, table = _sqlite(tmp_path, "fb")
    returning = insert(table).returning(table.c.id)
    expanding = update(table).where(table.c.id.in_(bindparam("ids", expanding=True))).values(flag=True)
    with engine.begin() as conn:
        assert db_module.execute_write(returning, {"id": 7, "label": "r"}, conn).scalar_one() == 7
        db_module.execute_write(insert(table), {"id": 8, "label": "s"}, conn)
        assert db_module.execute_write(expanding, {"ids": [7, 8]}, conn).rowcount == 2
    assert db_module._prepared(returning, engine.dialect, ("id", "label"), False) is None
    engine.dispose()


def test_a_context_taking_default_goes_through_sqlalchemy(tmp_path):
    """A default that reads the execution context cannot be computed without one."""
    metadata = MetaData()
    table = Table(
        "ctx",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("a", Integer),
        Column("twice", Integer, default=lambda ctx: ctx.get_current_parameters()["a"] * 2),
    )
    engine = create_engine(f"sqlite:///{tmp_path / 'ctx.sqlite'}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        db_module.execute_write(insert(table), {"id": 1, "a": 21}, conn)
        assert conn.execute(text("SELECT twice FROM ctx")).scalar_one() == 42
    engine.dispose()


def test_a_new_statement_object_is_never_served_an_old_compilation(tmp_path):
    """The cache holds its statements, so an id seen before names the same object."""
    engine, table = _sqlite(tmp_path, "ids")
    with engine.begin() as conn:
        for i in range(50):  # statements built per call: each compiled for itself
            stmt = update(table).where(table.c.id == bindparam("row")).values(label=f"v{i}")
            db_module.execute_write(insert(table), {"id": i, "label": f"x{i}"}, conn)
            db_module.execute_write(stmt, {"row": i}, conn)
        labels = conn.execute(select(table.c.label).order_by(table.c.id)).scalars().all()
    assert labels == [f"v{i}" for i in range(50)]
    assert all(entry[0] is not None for entry in db_module._PREPARED.values())
    engine.dispose()


def test_refused_values_raise_what_connection_execute_raises(tmp_path):
    """A value a bind processor refuses (Boolean 2, a set in a JSON column) or a row missing
    a key of an executemany: SQLAlchemy's StatementError, as from conn.execute, so that
    the app's SQLAlchemyError handler sees it (not a bare ValueError/TypeError)."""
    metadata = MetaData()
    table = Table("e", metadata, Column("id", Integer, primary_key=True), Column("b", Boolean), Column("j", JSON))
    engine = create_engine(f"sqlite:///{tmp_path / 'e.sqlite'}")
    metadata.create_all(engine)
    try:
        for params in ({"id": 1, "b": 2}, {"id": 1, "j": {1, 2}}, [{"id": 1, "j": 1}, {"id": 2}]):
            with engine.connect() as conn:
                with pytest.raises(sa_exc.StatementError):
                    conn.execute(insert(table), params)
                conn.rollback()
                with pytest.raises(sa_exc.StatementError):
                    db_module.execute_write(insert(table), params, conn)
                conn.rollback()
    finally:
        engine.dispose()


def test_each_engine_gets_its_own_compilation(tmp_path):
    """Two engines of one dialect that serialise JSON differently share no bind processors."""
    import json

    metadata = MetaData()
    table = _table(metadata, "w")
    ins = insert(table)
    stored = []
    for name, serializer in (("plain", json.dumps), ("wrapped", lambda v: json.dumps({"wrapped": v}))):
        engine = create_engine(f"sqlite:///{tmp_path / f'{name}.sqlite'}", json_serializer=serializer)
        metadata.create_all(engine)
        with engine.begin() as conn:
            db_module.execute_write(ins, {"id": 1, "label": "a", "payload": [1]}, conn)
            stored.append(conn.execute(text("SELECT payload FROM w")).scalar_one())
        engine.dispose()
    assert stored == ["[1]", '{"wrapped": [1]}']


def test_an_empty_parameter_list_is_refused_clearly():
    """SQLAlchemy deprecates executing with ``[]``; no caller means it (defer_write skips it)."""
    with pytest.raises(ValueError, match="at least one row"):
        db_module.execute_write(insert(_table(MetaData(), "w")), [], conn=object())


def test_fetch_all_gives_what_connection_execute_gives(engine_and_table):
    """``db.fetch_all`` (on SQLite straight to sqlite3, elsewhere ``Connection.execute``):
    the same values, each column processed by its type (JSON decoded, booleans, datetimes,
    NULLs), for a bound parameter, a join and a scalar subquery."""
    from sqlalchemy import and_, func

    engine, table = engine_and_table
    other = table.alias("other")
    n_flagged = select(func.count()).select_from(other).where(other.c.flag).scalar_subquery()
    query = (
        select(table.c.id, table.c.label, table.c.payload, table.c.flag, table.c.created_at, other.c.note, n_flagged)
        .select_from(table.outerjoin(other, and_(other.c.id == table.c.id + 1, other.c.label != bindparam("skip"))))
        .where(table.c.id >= bindparam("from_id"))
        .order_by(table.c.id)
    )
    rows = [
        {"id": 1, "label": "a", "payload": {"x": [1, 2.5, None], "é": "ü"}, "flag": True, "note": "n"},
        {"id": 2, "label": "b", "payload": [], "flag": False, "note": None},
        {"id": 3, "label": "c", "payload": "text", "flag": True, "note": "m"},
    ]
    with engine.begin() as conn:
        conn.execute(insert(table), rows)
        for params in ({"from_id": 1, "skip": "c"}, {"from_id": 3, "skip": "zz"}, {"from_id": 9, "skip": ""}):
            expected = [tuple(r) for r in conn.execute(query, params)]
            got = db_module.fetch_all(query, params, conn)
            assert got == expected
            assert [type(v) for row in got for v in row] == [type(v) for row in expected for v in row]
    assert expected == []  # the last one matched nothing


def test_sqlite_driver_path_keeps_listeners_and_sqlalchemys_errors(tmp_path):
    """On SQLite in a begun transaction ``execute_write`` and ``fetch_all`` go to sqlite3
    themselves (``before_cursor_execute`` sees no execution context); SQLAlchemy's
    listeners still see every statement and its errors are still SQLAlchemy's. Outside a
    transaction they go through SQLAlchemy, which begins one."""
    from sqlalchemy import event

    engine, table = _sqlite(tmp_path, "drv")
    seen: list[tuple[str, bool]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement.split()[0], context is None))

    with engine.connect() as conn:
        db_module.execute_write(insert(table), {"id": 1, "label": "a"}, conn)  # no transaction yet
        db_module.execute_write(insert(table), {"id": 2, "label": "b"}, conn)
        assert db_module.fetch_all(select(table.c.label).order_by(table.c.id), {}, conn) == [("a",), ("b",)]
        with pytest.raises(sa_exc.IntegrityError):
            db_module.execute_write(insert(table), {"id": 3, "label": "a"}, conn)
        conn.rollback()
    assert seen[:3] == [("INSERT", False), ("INSERT", True), ("SELECT", True)]
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE w")
        with pytest.raises(sa_exc.OperationalError, match="no such table"):
            db_module.fetch_all(select(table.c.id), {}, conn)
    engine.dispose()
