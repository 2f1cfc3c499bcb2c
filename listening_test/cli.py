"""Command line: ``db upgrade`` (Flask-Migrate), ``experiment create``, ``serve``.

The commands live on ``app.cli`` so that ``flask --app listening_test`` and
``python -m listening_test`` run the same code, and tests use ``app.test_cli_runner()``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from .db import db

PROCEDURES = ("staircase", "bayesian", "binary_search", "paired")
TEST_TYPES = ("same_different", "ab_preference")


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


@click.group("experiment", help="Create and list experiments.")
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
@click.option("--target-judgments", type=int, default=None)
@click.option("--reward-cents", type=int, default=None)
@click.option("--prolific-completion-code", default=None)
@click.option("--verify-hashes", is_flag=True, help="check every file's sha256 against the manifest")
@with_appcontext
def create_command(manifest, test_type, procedure, name, procedure_config, flow_config, target_judgments,
                   reward_cents, prolific_completion_code, verify_hashes) -> None:
    """Import a stimulus set and create an experiment; prints its participant path."""
    from .flow_config import DEFAULT_PROCEDURE
    from .manifest_import import ManifestError, create_experiment

    procedure = procedure or DEFAULT_PROCEDURE[test_type]
    try:
        experiment = create_experiment(
            db.session, manifest, procedure=procedure, name=name, test_type=test_type,
            procedure_config=_json_option(procedure_config, "--procedure-config"),
            config=_json_option(flow_config, "--config"), target_judgments=target_judgments,
            reward_cents=reward_cents, prolific_completion_code=prolific_completion_code,
            verify_hashes=verify_hashes)
        db.session.commit()
    except (ManifestError, ValueError) as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from None
    n = len(experiment.stimuli)
    click.echo(f"created experiment {experiment.slug!r} ({test_type}, {n} stimuli, procedure {procedure})")
    click.echo(f"participant URL: /e/{experiment.slug}")


@experiment_group.command("list")
@with_appcontext
def list_command() -> None:
    from sqlalchemy import select

    from .models import Experiment

    for e in db.session.scalars(select(Experiment).order_by(Experiment.id)):
        click.echo(f"{e.slug}\t{e.status}\t{e.procedure}\t{e.name}")


@click.command("serve", help="Serve the app with gunicorn (production) or Flask's server (--dev).")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--workers", default=2, type=int, help="gunicorn worker processes")
@click.option("--threads", default=8, type=int, help="threads per gunicorn worker")
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn")
@click.option("--print-command", is_flag=True, help="print the gunicorn command and exit")
@with_appcontext
def serve_command(host, port, workers, threads, dev, print_command) -> None:
    from .config import ConfigError, check_config

    try:
        check_config(current_app.config)  # refuse to serve without a secret, before anything starts
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if dev:
        current_app.run(host=host, port=port, debug=False, use_reloader=False)
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
    from .mturk_hits import mturk_group

    app.cli.add_command(experiment_group)
    app.cli.add_command(serve_command)
    app.cli.add_command(mturk_group)


def _create_app():
    from . import create_app

    return create_app()


def main() -> None:
    # Flask-Migrate adds the ``db`` group to app.cli; FlaskGroup loads it from the app.
    cli = FlaskGroup(create_app=_create_app, add_default_commands=False,
                     help="jndlab listening test: db upgrade, experiment create, serve.")
    from .demo import demo_command  # not on app.cli: it sets the secrets before the app is built

    cli.add_command(demo_command)
    from .simulation.cli import simulate_command  # a client: needs no app, no SECRET_KEY

    cli.add_command(simulate_command)
    cli.main(prog_name="python -m listening_test")
