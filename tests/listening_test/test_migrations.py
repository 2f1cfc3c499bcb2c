"""The schema is built only by Alembic: upgrade head and downgrade base, on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, text

from listening_test.db import db
from tests.listening_test.lt_helpers import PG_URL, TABLES, make_app, pg_app


def _check_schema(engine) -> None:
    insp = inspect(engine)
    names = set(insp.get_table_names())
    assert set(TABLES) <= names and "alembic_version" in names
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("responses")}
    assert ("trial_id",) in uniques  # no answer stored twice
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("trials")}
    assert ("session_id", "trial_index") in uniques
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("participants")}
    assert ("experiment_id", "platform", "platform_worker_id") in uniques


def _head() -> str:
    from alembic.script import ScriptDirectory
    from flask import current_app

    return ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config()).get_current_head()


def _roundtrip(app) -> None:
    with app.app_context():
        upgrade()
        _check_schema(db.engine)
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == _head()
        downgrade(revision="base")
        left = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
        assert left == set()
        upgrade()  # and back up: the migration is repeatable
        _check_schema(db.engine)
        db.engine.dispose()


def test_sqlite_upgrade_and_downgrade(tmp_path):
    path = tmp_path / "empty.sqlite"
    app = make_app(f"sqlite:///{path}")
    _roundtrip(app)
    with app.app_context():
        with db.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
        db.engine.dispose()


@pytest.mark.postgres
def test_postgres_upgrade_and_downgrade(pg_schema):
    app = pg_app(pg_schema)
    _roundtrip(app)
    probe = create_engine(PG_URL)
    with probe.connect() as conn:
        tables = set(conn.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": pg_schema}).scalars())
    probe.dispose()
    assert set(TABLES) <= tables  # everything landed in the test's own schema
