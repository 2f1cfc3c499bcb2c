"""The commands' database check: refuse, with one line naming it, a database that does not
exist or is not migrated to the latest revision (instead of creating an empty SQLite file
in the current folder and failing on a missing table)."""

from __future__ import annotations

import functools
from pathlib import Path

import click
from flask import Flask, current_app

from ..db import db


def database_problem(app: Flask) -> str | None:
    """Why the app's database cannot be used yet (one line naming it), or None.

    Checks without creating anything: a SQLite file that does not exist is not opened.
    """
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect, text

    url = app.config["SQLALCHEMY_DATABASE_URI"]
    shown = db.engine.url.render_as_string(hide_password=True)
    fix = "run `python -m listening_test db upgrade` (set DATABASE_URL to use another database)"
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url[len("sqlite:///") :])
        if not path.is_file():
            return f"no database at {path.resolve()}: {fix}"
    try:
        with db.engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return f"the database {shown} is empty (not migrated): {fix}"
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as error:  # noqa: BLE001 - any failure to reach the database is reported in one line
        return f"cannot open the database {shown}: {error.__class__.__name__}: {str(error).splitlines()[0]}"
    head = ScriptDirectory(app.config["MIGRATIONS_DIR"]).get_current_head()
    if current != head:
        return f"the database {shown} is at revision {current}, not the latest {head}: {fix}"
    return None


def needs_database(command):
    """Decorator: refuse (exit 1, one line) when ``database_problem`` finds one."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        problem = database_problem(current_app)
        if problem:
            raise click.ClickException(problem)
        return command(*args, **kwargs)

    return wrapper
