"""``serve``: the app behind gunicorn (production) or werkzeug's threaded server (``--dev``)."""

from __future__ import annotations

import os
import shutil
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from ..config import ConfigError, check_config
from .database import database_problem

GUNICORN_CONFIG = "python:listening_test.gunicorn_conf"  # gc.freeze() per worker (see that module)


@click.command("serve", help="Serve the app with gunicorn (production) or Flask's server (--dev).")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--workers", default=2, type=int, help="gunicorn worker processes")
@click.option("--threads", default=8, type=int, help="threads per gunicorn worker")
@click.option("--dev", is_flag=True, help="werkzeug's development server (threaded) instead of gunicorn")
@click.option("--print-command", is_flag=True, help="print the gunicorn command and exit")
@with_appcontext
def serve_command(host, port, workers, threads, dev, print_command) -> None:
    """Refuses (one line) without a usable SECRET_KEY or database; gunicorn replaces this process."""
    try:
        check_config(current_app.config)  # refuse to serve without a secret, before anything starts
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if not print_command:
        problem = database_problem(current_app)
        if problem:
            raise click.ClickException(problem)
    if dev:
        # Not app.run(): Flask ignores it inside a `flask` CLI command and returns at once.
        from werkzeug.serving import run_simple

        app = current_app._get_current_object()  # type: ignore[attr-defined]
        click.echo(f"serving on http://{host}:{port} (development server; Ctrl+C stops)")
        run_simple(host, port, app, use_reloader=False, use_debugger=False, threaded=True)
        return
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if gunicorn is None:
        raise click.ClickException("gunicorn is not installed; pip install gunicorn, or use --dev")
    argv = [
        gunicorn,
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--access-logfile",
        "-",
        "--config",
        GUNICORN_CONFIG,
        "listening_test:create_app()",
    ]
    if print_command:
        click.echo(" ".join(argv))
        return
    os.execv(gunicorn, argv)  # noqa: S606 - replace this process: signals go straight to gunicorn
