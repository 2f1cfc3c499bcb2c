"""The SQLAlchemy handle, Flask-Migrate, and per-backend connection settings.

SQLite is the embedded default: WAL mode lets readers run beside the writer, and
every write transaction starts with BEGIN IMMEDIATE so that two requests never both
read and then fail to upgrade to a write lock (SQLITE_BUSY mid-transaction);
read-only requests (``mark_read_only``) use a deferred BEGIN.
On PostgreSQL, write paths lock the participant's session row (FOR UPDATE).
"""
from __future__ import annotations

from flask import Flask, g, has_app_context
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names so that migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# expire_on_commit=False: a handler builds its reply from objects it just committed,
# without reloading them (on SQLite that reload would take the write lock again).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
migrate = Migrate()

SQLITE_BUSY_TIMEOUT_MS = 10_000


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # Let SQLAlchemy's "begin" hook emit BEGIN itself (pysqlite's implicit BEGIN is deferred).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode, far fewer fsyncs
    cursor.close()


def _sqlite_on_begin(connection) -> None:
    # Read-only requests (mark_read_only) take a deferred BEGIN: in WAL mode they read
    # a snapshot beside the writer instead of queueing for the single write lock.
    connection.exec_driver_sql("BEGIN" if has_app_context() and g.get("jndlab_read_only") else "BEGIN IMMEDIATE")


def mark_read_only() -> None:
    """This request only reads: on SQLite its transactions do not take the write lock."""
    g.jndlab_read_only = True


def configure_engine(engine: Engine) -> None:
    """Attach the backend-specific hooks to ``engine`` (idempotent)."""
    if engine.dialect.name != "sqlite":
        return
    if not event.contains(engine, "connect", _sqlite_on_connect):
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        engine.dispose()  # connections opened before the hook lack the pragmas


def init_db(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=app.config["MIGRATIONS_DIR"])
    with app.app_context():
        configure_engine(db.engine)


def is_postgres() -> bool:
    return db.engine.dialect.name == "postgresql"
