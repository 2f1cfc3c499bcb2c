"""``experiment create|list|launch|estimate|status``: experiments from the command line.

Each refuses, with one line naming it, a database that does not exist or is not
migrated (``cli.database.needs_database``), and exits 1 with one line on bad input.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click
from flask.cli import with_appcontext

from ..db import db
from ..flow_config import TEST_TYPES
from .database import needs_database

PROCEDURES = ("staircase", "bayesian", "binary_search", "paired")


def _sessions(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an integer or 'unlimited'", param_hint="--sessions-per-worker"
        ) from None


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
@click.option(
    "--test-type",
    default="same_different",
    type=click.Choice(TEST_TYPES),
    show_default=True,
    help="same_different: adaptive JND tracks; ab_preference: which of two systems is closer to clean",
)
@click.option(
    "--procedure",
    default=None,
    type=click.Choice(PROCEDURES),
    help="adaptive procedure (default: bayesian; ab_preference tests use 'paired')",
)
@click.option("--name", default=None, help="experiment name (default: the manifest's folder name)")
@click.option("--procedure-config", default=None, help="procedure options as JSON, e.g. '{\"n_down\": 3}'")
@click.option(
    "--config",
    "flow_config",
    default=None,
    help='flow options as JSON, e.g. \'{"catch_rate": 0.1, "references_per_participant": 2}\'',
)
@click.option(
    "--target-participants",
    type=click.IntRange(min=1),
    default=None,
    help="complete participants wanted; the study closes itself when it has them",
)
@click.option(
    "--target-judgments",
    type=click.IntRange(min=1),
    default=None,
    help="main judgments wanted; the study closes itself when it has them",
)
@click.option("--reward-cents", type=click.IntRange(min=0), default=None)
@click.option(
    "--prolific-completion-code",
    default=None,
    help="the study's Prolific completion code (default: generated; shown by `experiment list`)",
)
@click.option(
    "--prolific-screened-out-code",
    default=None,
    help="the Prolific code for screened-out participants (default: generated)",
)
@click.option("--consent-text", default=None, help="the consent paragraph (text, or @FILE)")
@click.option("--description", default=None, help="the study description participants see (text, or @FILE)")
@click.option(
    "--launch",
    "launch_now",
    is_flag=True,
    help="open it to participants at once (default: a draft, in test mode, until `experiment launch`)",
)
@click.option("--verify-hashes", is_flag=True, help="check every file's sha256 against the manifest")
@click.option(
    "--sessions-per-worker",
    default="1",
    show_default=True,
    help="sessions one worker ID may hold (repeat participation); 'unlimited' for no limit",
)
@click.option(
    "--mturk-environment",
    type=click.Choice(["sandbox", "production"]),
    default=None,
    help="where the MTurk HITs live (mturk create-hits also records it)",
)
@with_appcontext
@needs_database
def create_command(
    manifest,
    test_type,
    procedure,
    name,
    procedure_config,
    flow_config,
    target_participants,
    target_judgments,
    reward_cents,
    prolific_completion_code,
    prolific_screened_out_code,
    consent_text,
    description,
    launch_now,
    verify_hashes,
    sessions_per_worker,
    mturk_environment,
) -> None:
    """Import a stimulus set and create an experiment (a draft unless --launch); prints its
    participant path, its expected length and its completion codes."""
    from ..estimates import describe
    from ..flow_config import DEFAULT_PROCEDURE
    from ..manifest_import import ManifestError, check_recruitment_settings, create_experiment
    from ..platforms.recruitment import prepare_new_experiment

    procedure = procedure or DEFAULT_PROCEDURE[test_type]
    try:
        check_recruitment_settings(
            target_participants=target_participants, prolific_screened_out_code=prolific_screened_out_code
        )
        experiment = create_experiment(
            db.session,
            manifest,
            procedure=procedure,
            name=name,
            test_type=test_type,
            procedure_config=_json_option(procedure_config, "--procedure-config"),
            config=_json_option(flow_config, "--config"),
            target_judgments=target_judgments,
            reward_cents=reward_cents,
            prolific_completion_code=prolific_completion_code,
            verify_hashes=verify_hashes,
            mturk_environment=mturk_environment,
            max_sessions_per_worker=None if sessions_per_worker == "unlimited" else _sessions(sessions_per_worker),
        )
        prepare_new_experiment(
            db.session,
            experiment,
            draft=not launch_now,
            target_participants=target_participants,
            prolific_screened_out_code=prolific_screened_out_code,
            consent_text=_read_text_option(consent_text, "--consent-text"),
            description=_read_text_option(description, "--description"),
        )
        db.session.commit()
    except (ManifestError, ValueError) as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from None
    n = len(experiment.stimuli)
    click.echo(f"created experiment {experiment.slug!r} ({test_type}, {n} stimuli, procedure {procedure})")
    click.echo(f"participant URL: /e/{experiment.slug}")
    click.echo(f"length: {describe(experiment.estimate)}")
    click.echo(
        f"Prolific completion codes: complete {experiment.prolific_completion_code}, "
        f"screened out {experiment.prolific_screened_out_code}"
    )
    if experiment.status == "draft":
        click.echo(
            f"status: draft (test mode). Try it, then open it: "
            f"python -m listening_test experiment launch {experiment.slug}"
        )


@experiment_group.command("list")
@with_appcontext
@needs_database
def list_command() -> None:
    """One line per experiment: slug, status, procedure, name, Prolific codes."""
    from sqlalchemy import select

    from ..models import Experiment

    for e in db.session.scalars(select(Experiment).order_by(Experiment.id)):
        click.echo(
            f"{e.slug}\t{e.status}\t{e.procedure}\t{e.name}\t"
            f"complete={e.prolific_completion_code or '-'}\tscreened_out={e.prolific_screened_out_code or '-'}"
        )


def _on_experiment(name: str):
    """``experiment NAME SLUG ...``: a command on an existing experiment, in the app context
    on a usable database (``needs_database``); the function gets the ORM experiment named
    SLUG instead of the slug, and its other parameters as declared below this decorator.
    An unknown SLUG exits 1 with one line."""

    def decorate(function):
        @functools.wraps(function)
        def command(slug: str, **kwargs):
            from .. import store

            experiment = store.experiment_by_slug(slug)
            if experiment is None:
                raise click.ClickException(f"no experiment {slug!r} (see `python -m listening_test experiment list`)")
            return function(experiment, **kwargs)

        return experiment_group.command(name)(click.argument("slug")(with_appcontext(needs_database(command))))

    return decorate


def _refused(action, *args):
    """``action(*args)`` (a recruitment change); a ValueError is the command's one-line refusal."""
    try:
        return action(*args)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


@_on_experiment("launch")
def launch_command(experiment) -> None:
    """Open a draft to participants; its test sessions are deleted."""
    from ..platforms.recruitment import launch

    removed = _refused(launch, experiment)
    db.session.commit()
    click.echo(f"launched {experiment.slug!r}: open to participants ({removed} test session(s) deleted)")


@_on_experiment("estimate")
def estimate_command(experiment) -> None:
    """Print the expected length of a study per participant (simulated with its procedure)."""
    from ..estimates import describe, ensure_estimate

    estimate = ensure_estimate(db.session, experiment)
    if estimate is None:
        raise click.ClickException(f"cannot estimate {experiment.slug!r}: its stimulus set has no usable ladder")
    click.echo(f"{experiment.slug}: {describe(estimate)}")
    click.echo(
        f"  tracks per participant: {estimate['tracks']}; seconds per trial: {estimate['seconds_per_trial']}; "
        f"method: {estimate['method']}"
    )


@_on_experiment("status")
@click.argument("status", type=click.Choice(("active", "closed")))
def status_command(experiment, status: str) -> None:
    """Close a study to new participants, or reopen it."""
    from ..platforms.recruitment import set_status

    _refused(set_status, experiment, status)
    db.session.commit()
    click.echo(f"{experiment.slug}: {experiment.status}")
