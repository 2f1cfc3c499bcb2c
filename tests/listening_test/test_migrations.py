"""The schema is built only by Alembic: upgrade head and downgrade base, on SQLite and PostgreSQL;
and the tables the migrations build are exactly those of ``listening_test.schema`` (which the
ORM models map)."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import MetaData, String, UniqueConstraint, create_engine, inspect, text

from listening_test import models, schema
from listening_test.db import db
from tests.listening_test.lt_helpers import PG_URL, TABLES, make_app, pg_app

# Migration 0002 leaves these INTEGER on SQLite on purpose (SQLite integers hold 64 bits
# whatever the declared type; rebuilding stimuli under foreign_keys=ON is not possible).
SQLITE_BIGINT_AS_INTEGER = {("stimuli", "seed"), ("stimuli", "num_samples"), ("sessions", "seed")}


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
        tables = set(
            conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": pg_schema}
            ).scalars()
        )
    probe.dispose()
    assert set(TABLES) <= tables  # everything landed in the test's own schema


def _differences(engine, metadata: MetaData) -> list:
    """What Alembic's autogenerate finds between the database at ``engine`` and ``metadata``:
    tables, columns, types, nullability, server defaults, keys, unique constraints, indexes."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        found = compare_metadata(context, metadata)
    if engine.dialect.name == "sqlite":
        found = [
            d
            for d in found
            if not (isinstance(d, list) and d[0][0] == "modify_type" and (d[0][2], d[0][3]) in SQLITE_BIGINT_AS_INTEGER)
        ]
    return found


def _schema_copy() -> MetaData:
    copy = MetaData(naming_convention=schema.NAMING_CONVENTION)
    for table in schema.metadata.sorted_tables:
        table.to_metadata(copy)
    return copy


def _drop_unique(metadata: MetaData) -> None:
    table = metadata.tables["responses"]
    table.constraints.discard(next(c for c in table.constraints if isinstance(c, UniqueConstraint)))


def _drop_cascade(metadata: MetaData) -> None:
    next(iter(metadata.tables["trials"].c.session_id.foreign_keys)).constraint.ondelete = None


MUTATIONS = {
    "nullable": lambda md: setattr(md.tables["trials"].c.kind, "nullable", True),
    "length": lambda md: setattr(md.tables["trials"].c.kind, "type", String(17)),  # a new type: types are shared
    "index": lambda md: md.tables["stimuli"].indexes.clear(),
    "unique": _drop_unique,
    "ondelete": _drop_cascade,
    "server_default": lambda md: setattr(md.tables["sessions"].c.attempt, "server_default", None),
}


def _check_agreement(app) -> None:
    with app.app_context():
        upgrade()
        assert _differences(db.engine, schema.metadata) == []
        for name, mutate in MUTATIONS.items():  # and the comparison sees what it is meant to see
            changed = _schema_copy()
            mutate(changed)
            assert _differences(db.engine, changed), name
        assert _differences(db.engine, schema.metadata) == []  # the copies left the schema as it was
        db.engine.dispose()


def test_models_map_the_schema_tables():
    assert db.metadata is schema.metadata
    mapped = {
        cls.__table__.name: cls.__table__
        for cls in (
            models.Experiment,
            models.Stimulus,
            models.Participant,
            models.Session,
            models.Track,
            models.Trial,
            models.AudioToken,
            models.Response,
            models.ScreeningResult,
        )
    }
    assert set(mapped) == set(schema.metadata.tables) == set(TABLES)
    assert all(table is schema.metadata.tables[name] for name, table in mapped.items())


def test_sqlite_migrations_build_the_schema(tmp_path):
    _check_agreement(make_app(f"sqlite:///{tmp_path / 'agree.sqlite'}"))


@pytest.mark.postgres
def test_postgres_migrations_build_the_schema(pg_schema):
    _check_agreement(pg_app(pg_schema))
