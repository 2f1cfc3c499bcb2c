"""The command line: ``python -m listening_test ...`` and ``flask --app listening_test ...``.

- ``experiment``: ``experiment create|list|launch|estimate|status``;
- ``serve``: the app behind gunicorn (or werkzeug's server with ``--dev``);
- ``mturk``: ``mturk export-workers|question-xml|create-hits`` (``platforms.mturk_hits``);
- ``demo``: a ready study on the demo stimulus set (sets its secrets, then serves);
- ``database``: the check every command that reads the database makes first.

The app's commands live on ``app.cli`` (``register``) so that ``flask --app listening_test``
and ``python -m listening_test`` (``main``) run the same code, and tests use
``app.test_cli_runner()``; Flask-Migrate adds ``db``.
"""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import FlaskGroup

__all__ = ["main", "register"]


def register(app: Flask) -> None:
    """Add the app's commands (``experiment``, ``serve``, ``mturk``) to ``app.cli``."""
    from .experiment import experiment_group
    from .mturk import mturk_group
    from .serve import serve_command

    app.cli.add_command(experiment_group)
    app.cli.add_command(serve_command)
    app.cli.add_command(mturk_group)


def _create_app():
    from .. import create_app
    from ..config import ConfigError

    try:
        return create_app()
    except ConfigError as error:  # a bad setting: one line naming it, not a traceback
        raise click.ClickException(str(error)) from None


def main() -> None:
    """``python -m listening_test``: the app's commands plus ``demo`` and ``simulate``."""
    # Flask-Migrate adds the ``db`` group to app.cli; FlaskGroup loads it from the app.
    cli = FlaskGroup(
        create_app=_create_app,
        add_default_commands=False,
        help="jndlab listening test: db upgrade, experiment create, serve.",
    )
    from .demo import demo_command  # not on app.cli: it sets the secrets before the app is built

    cli.add_command(demo_command)
    from ..simulation.cli import simulate_command  # a client: needs no app, no SECRET_KEY

    cli.add_command(simulate_command)
    cli.main(prog_name="python -m listening_test")
