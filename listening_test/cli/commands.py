"""Command line: ``db upgrade`` (Flask-Migrate), ``experiment create|list|launch|status``, ``serve``.

Commands that read the database refuse, with one line naming it, a database that
does not exist or is not migrated to the latest revision (instead of creating an
empty SQLite file in the current folder and failing on a missing table).

The commands live on ``app.cli`` so that ``flask --app listening_test`` and
``python -m listening_test`` run the same code, and tests use ``app.test_cli_runner()``.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from ..db import db

PROCEDURES = ("staircase", "bayesian", "binary_search", "paired")
TEST_TYPES = ("same_different", "ab_preference")


def _sessions(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an integer or 'unlimited'",
                                 param_hint="--sessions-per-worker") from None


def _json_option(value: str | None, name: str) -> dict:
    if not value:
        return {}
    try:
        data = json.loads(value)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON ({error})", param_hint=name) from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint=name)
    return data


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
        path = Path(url[len("sqlite:///"):])
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


def _read_text_option(value: str | None, name: str) -> str | None:
    """A text given inline or as @FILE (read as UTF-8)."""
    if value is None or not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except OSError as error:
        raise click.BadParameter(f"cannot read {value[1:]}: {error.strerror}", param_hint=name) from None


@click.group("experiment", help="Create, list, launch and close experiments.")
def experiment_group() -> None:
    pass


@experiment_group.command("create")
@click.option("--manifest", required=True, type=click.Path(dir_okay=False), help="manifest.csv of a stimulus set")
@click.option("--test-type", default="same_different", type=click.Choice(TEST_TYPES), show_default=True,
              help="same_different: adaptive JND tracks; ab_preference: which of two systems is closer to clean")
@click.option("--procedure", default=None, type=click.Choice(PROCEDURES),
              help="adaptive procedure (default: bayesian; ab_preference tests use 'paired')")
@click.option("--name", default=None, help="experiment name (default: the manifest's folder name)")
@click.option("--procedure-config", default=None, help='procedure options as JSON, e.g. \'{"n_down": 3}\'')
@click.option("--config", "flow_config", default=None,
              help='flow options as JSON, e.g. \'{"catch_rate": 0.1, "references_per_participant": 2}\'')
@click.option("--target-participants", type=click.IntRange(min=1), default=None,
              help="complete participants wanted; the study closes itself when it has them")
@click.option("--target-judgments", type=click.IntRange(min=1), default=None,
              help="main judgments wanted; the study closes itself when it has them")
@click.option("--reward-cents", type=click.IntRange(min=0), default=None)
@click.option("--prolific-completion-code", default=None,
              help="the study's Prolific completion code (default: generated; shown by `experiment list`)")
@click.option("--prolific-screened-out-code", default=None,
              help="the Prolific code for screened-out participants (default: generated)")
@click.option("--consent-text", default=None, help="the consent paragraph (text, or @FILE)")
@click.option("--description", default=None, help="the study description participants see (text, or @FILE)")
@click.option("--launch", "launch_now", is_flag=True,
              help="open it to participants at once (default: a draft, in test mode, until `experiment launch`)")
@click.option("--verify-hashes", is_flag=True, help="check every file's sha256 against the manifest")
@click.option("--sessions-per-worker", default="1", show_default=True,
              help="sessions one worker ID may hold (repeat participation); 'unlimited' for no limit")
@click.option("--mturk-environment", type=click.Choice(["sandbox", "production"]), default=None,
              help="where the MTurk HITs live (mturk create-hits also records it)")
@with_appcontext
@needs_database
def create_command(manifest, test_type, procedure, name, procedure_config, flow_config, target_participants,
                   target_judgments, reward_cents, prolific_completion_code, prolific_screened_out_code,
                   consent_text, description, launch_now, verify_hashes, sessions_per_worker,
                   mturk_environment) -> None:
    """Import a stimulus set and create an experiment (a draft unless --launch); prints its
    participant path, its expected length and its completion codes."""
    from ..estimates import describe
    from ..flow_config import DEFAULT_PROCEDURE
    from ..manifest_import import ManifestError, check_recruitment_settings, create_experiment
    from ..platforms.recruitment import prepare_new_experiment

    procedure = procedure or DEFAULT_PROCEDURE[test_type]
    try:
        check_recruitment_settings(target_participants=target_participants,
                                   prolific_screened_out_code=prolific_screened_out_code)
        experiment = create_experiment(
            db.session, manifest, procedure=procedure, name=name, test_type=test_type,
            procedure_config=_json_option(procedure_config, "--procedure-config"),
            config=_json_option(flow_config, "--config"), target_judgments=target_judgments,
            reward_cents=reward_cents, prolific_completion_code=prolific_completion_code,
            verify_hashes=verify_hashes, mturk_environment=mturk_environment,
            max_sessions_per_worker=None if sessions_per_worker == "unlimited" else _sessions(sessions_per_worker))
        prepare_new_experiment(
            db.session, experiment, draft=not launch_now, target_participants=target_participants,
            prolific_screened_out_code=prolific_screened_out_code,
            consent_text=_read_text_option(consent_text, "--consent-text"),
            description=_read_text_option(description, "--description"))
        db.session.commit()
    except (ManifestError, ValueError) as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from None
    n = len(experiment.stimuli)
    click.echo(f"created experiment {experiment.slug!r} ({test_type}, {n} stimuli, procedure {procedure})")
    click.echo(f"participant URL: /e/{experiment.slug}")
    click.echo(f"length: {describe(experiment.estimate)}")
    click.echo(f"Prolific completion codes: complete {experiment.prolific_completion_code}, "
               f"screened out {experiment.prolific_screened_out_code}")
    if experiment.status == "draft":
        click.echo(f"status: draft (test mode). Try it, then open it: "
                   f"python -m listening_test experiment launch {experiment.slug}")


@experiment_group.command("list")
@with_appcontext
@needs_database
def list_command() -> None:
    """One line per experiment: slug, status, procedure, name, Prolific codes."""
    from sqlalchemy import select

    from ..models import Experiment

    for e in db.session.scalars(select(Experiment).order_by(Experiment.id)):
        click.echo(f"{e.slug}\t{e.status}\t{e.procedure}\t{e.name}\t"
                   f"complete={e.prolific_completion_code or '-'}\tscreened_out={e.prolific_screened_out_code or '-'}")


def _find(slug: str):
    from sqlalchemy import select

    from ..models import Experiment

    experiment = db.session.scalar(select(Experiment).where(Experiment.slug == slug))
    if experiment is None:
        raise click.ClickException(f"no experiment {slug!r} (see `python -m listening_test experiment list`)")
    return experiment


@experiment_group.command("launch")
@click.argument("slug")
@with_appcontext
@needs_database
def launch_command(slug: str) -> None:
    """Open a draft to participants; its test sessions are deleted."""
    from ..platforms.recruitment import launch

    experiment = _find(slug)
    try:
        removed = launch(experiment)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    db.session.commit()
    click.echo(f"launched {slug!r}: open to participants ({removed} test session(s) deleted)")


@experiment_group.command("estimate")
@click.argument("slug")
@with_appcontext
@needs_database
def estimate_command(slug: str) -> None:
    """Print the expected length of a study per participant (simulated with its procedure)."""
    from ..estimates import describe
    from ..web.pages import ensure_estimate

    experiment = _find(slug)
    estimate = ensure_estimate(experiment)
    if estimate is None:
        raise click.ClickException(f"cannot estimate {slug!r}: its stimulus set has no usable ladder")
    click.echo(f"{slug}: {describe(estimate)}")
    click.echo(f"  tracks per participant: {estimate['tracks']}; seconds per trial: {estimate['seconds_per_trial']}; "
               f"method: {estimate['method']}")


@experiment_group.command("status")
@click.argument("slug")
@click.argument("status", type=click.Choice(("active", "closed")))
@with_appcontext
@needs_database
def status_command(slug: str, status: str) -> None:
    """Close a study to new participants, or reopen it."""
    from ..platforms.recruitment import set_status

    experiment = _find(slug)
    try:
        set_status(experiment, status)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    db.session.commit()
    click.echo(f"{slug}: {experiment.status}")


@click.command("serve", help="Serve the app with gunicorn (production) or Flask's server (--dev).")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--workers", default=2, type=int, help="gunicorn worker processes")
@click.option("--threads", default=8, type=int, help="threads per gunicorn worker")
@click.option("--dev", is_flag=True, help="werkzeug's development server (threaded) instead of gunicorn")
@click.option("--print-command", is_flag=True, help="print the gunicorn command and exit")
@with_appcontext
def serve_command(host, port, workers, threads, dev, print_command) -> None:
    from ..config import ConfigError, check_config

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
    argv = [gunicorn, "--bind", f"{host}:{port}", "--workers", str(workers), "--threads", str(threads),
            "--worker-class", "gthread", "--access-logfile", "-", "listening_test:create_app()"]
    if print_command:
        click.echo(" ".join(argv))
        return
    os.execv(gunicorn, argv)  # replace this process: signals go straight to gunicorn


def register(app: Flask) -> None:
    from ..platforms.mturk_hits import mturk_group

    app.cli.add_command(experiment_group)
    app.cli.add_command(serve_command)
    app.cli.add_command(mturk_group)


def _create_app():
    from .. import create_app

    return create_app()


def main() -> None:
    # Flask-Migrate adds the ``db`` group to app.cli; FlaskGroup loads it from the app.
    cli = FlaskGroup(create_app=_create_app, add_default_commands=False,
                     help="jndlab listening test: db upgrade, experiment create, serve.")
    from .demo import demo_command  # not on app.cli: it sets the secrets before the app is built

    cli.add_command(demo_command)
    from ..simulation.cli import simulate_command  # a client: needs no app, no SECRET_KEY

    cli.add_command(simulate_command)
    cli.main(prog_name="python -m listening_test")
