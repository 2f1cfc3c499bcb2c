"""``python -m listening_test mturk ...``: Amazon Mechanical Turk from the command line.

- ``mturk create-hits``: HITs framing the experiment's participant page. The **sandbox**
  endpoint is the default; ``--production`` spends real money and asks for confirmation
  (``--yes`` skips the prompt, for scripts). ``--countries any`` removes the locale
  requirement, ``--no-qualifications`` drops them all (sandbox tests with a fresh
  worker account); ``--record`` names the JSON-lines record of the created HITs.
- ``mturk question-xml``: the ExternalQuestion XML; ``mturk export-workers``: who took part.

Every command refuses, in one line naming it, a database that does not exist or is not
migrated (``cli.database.needs_database``). The MTurk calls are ``platforms.mturk_hits``'s.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext

from ..db import db
from ..platforms import mturk_hits
from ..platforms.mturk import external_question_xml
from ..platforms.mturk_hits import (
    DEFAULT_COUNTRIES,
    HitSpec,
    MTurkError,
    create_hits,
    default_record_path,
    earlier_workers,
    estimated_cost,
    exclusion_qualification,
    parse_countries,
    parse_reward,
    qualification_requirements,
)
from .database import needs_database


@click.group("mturk", help="Amazon Mechanical Turk: ExternalQuestion XML and HITs (sandbox by default).")
def mturk_group() -> None:
    pass


def _participant_url(base: str | None, slug: str) -> str:
    if not base:
        raise MTurkError("no public URL: pass --url https://your.host (or set PUBLIC_BASE_URL)")
    return f"{base.rstrip('/')}/e/{slug}"


def _experiment(slug: str):
    from ..store import experiment_by_slug

    experiment = experiment_by_slug(slug)
    if experiment is None:
        raise MTurkError(f"no experiment {slug!r} (python -m listening_test experiment list)")
    return experiment


@mturk_group.command("export-workers")
@click.option("--experiment", "slugs", required=True, multiple=True, help="experiment slug (repeatable)")
@click.option(
    "--out",
    "out",
    default="-",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="CSV file (default: standard output)",
)
@with_appcontext
@needs_database
def export_workers_command(slugs, out) -> None:
    """Worker IDs who took part (CSV: worker_id, platform, stage, experiment): to block them
    on MTurk or Prolific, or to exclude them from a later study."""
    import csv
    import io

    ids = [_experiment(slug).id for slug in slugs]
    rows = earlier_workers(ids)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["worker_id", "platform", "stage", "experiment"])
    writer.writeheader()
    writer.writerows(rows)
    if out == "-":
        click.echo(buffer.getvalue(), nl=False)
    else:
        Path(out).write_text(buffer.getvalue(), encoding="utf-8")
        click.echo(f"{len(rows)} worker(s) written to {out}")


@mturk_group.command("question-xml")
@click.option("--experiment", "slug", required=True, help="experiment slug")
@click.option("--url", "base_url", default=None, help="public https base URL (default: PUBLIC_BASE_URL)")
@click.option("--frame-height", default=0, type=int, show_default=True)
@with_appcontext
@needs_database
def question_xml_command(slug, base_url, frame_height) -> None:
    """Print the ExternalQuestion XML for an experiment."""
    _experiment(slug)
    try:
        click.echo(
            external_question_xml(
                _participant_url(base_url or current_app.config.get("PUBLIC_BASE_URL"), slug), frame_height
            ),
            nl=False,
        )
    except ValueError as error:
        raise MTurkError(str(error)) from None


def _default_title(experiment) -> str:
    if experiment.test_type == "ab_preference":
        return f"Listening test: which clip sounds closer to the original? ({experiment.name})"
    return f"Listening test: same or different? ({experiment.name})"


def _default_description(experiment) -> str:
    if experiment.test_type == "ab_preference":
        return (
            "Listen to a clean speech recording and two processed versions of it over headphones, and "
            "say which version sounds closer to the clean one. Headphones and a quiet room required."
        )
    return (
        "Listen to pairs of short audio clips over headphones and say whether they sound the same or "
        "different. Headphones and a quiet room required."
    )


@mturk_group.command("create-hits")
@click.option("--experiment", "slug", required=True, help="experiment slug")
@click.option(
    "--url",
    "base_url",
    default=None,
    help="public https base URL serving the app (default: PUBLIC_BASE_URL); HITs frame <url>/e/<slug>",
)
@click.option("--reward", default=None, help="USD per assignment, e.g. 1.50 (default: the experiment's reward)")
@click.option(
    "--assignments",
    required=True,
    type=click.IntRange(1, 1_000_000),
    help="assignments per HIT (distinct workers per HIT)",
)
@click.option(
    "--hits",
    "n_hits",
    default=1,
    type=click.IntRange(1, 1000),
    show_default=True,
    help="how many HITs (a worker may take one assignment of each)",
)
@click.option("--title", default=None)
@click.option("--description", default=None)
@click.option("--keywords", default=HitSpec.keywords, show_default=True)
@click.option(
    "--duration-min",
    default=45,
    type=click.IntRange(1, 7 * 24 * 60),
    show_default=True,
    help="minutes a worker has to finish after accepting",
)
@click.option(
    "--lifetime-h", default=72, type=click.IntRange(1, 365 * 24), show_default=True, help="hours the HIT stays listed"
)
@click.option("--auto-approve-h", default=72, type=click.IntRange(0, 30 * 24), show_default=True)
@click.option(
    "--approval-rate",
    default=95,
    type=click.IntRange(0, 100),
    show_default=True,
    help="minimum % of a worker's assignments approved",
)
@click.option(
    "--min-approved", default=100, type=click.IntRange(0), show_default=True, help="minimum number of approved HITs"
)
@click.option(
    "--countries",
    default=",".join(DEFAULT_COUNTRIES),
    show_default=True,
    help="comma-separated ISO country codes workers must be in; 'any' for no locale requirement",
)
@click.option("--no-qualifications", is_flag=True, help="no qualification requirement at all")
@click.option("--frame-height", default=0, type=int, show_default=True)
@click.option(
    "--record",
    "record",
    default=None,
    type=click.Path(dir_okay=False),
    help="JSON-lines file the created HIT ids are appended to (default: instance/mturk_hits.jsonl)",
)
@click.option("--production", is_flag=True, help="the real marketplace (real money); default is the sandbox")
@click.option("--yes", is_flag=True, help="do not ask for confirmation in production")
@click.option("--dry-run", is_flag=True, help="print what would be sent and stop (no AWS call)")
@click.option(
    "--exclude-earlier-workers",
    "exclude",
    multiple=True,
    metavar="SLUG",
    help="hide the HITs from MTurk workers who took part in this experiment (SLUG) through a "
    "qualification of our own; repeatable, e.g. the experiment itself and earlier ones",
)
@with_appcontext
@needs_database
def create_hits_command(
    slug,
    base_url,
    reward,
    assignments,
    n_hits,
    title,
    description,
    keywords,
    duration_min,
    lifetime_h,
    auto_approve_h,
    approval_rate,
    min_approved,
    countries,
    no_qualifications,
    frame_height,
    record,
    production,
    yes,
    dry_run,
    exclude,
) -> None:
    """Create HITs whose ExternalQuestion frames the experiment's participant page."""
    experiment = _experiment(slug)
    if experiment.status != "active":
        raise MTurkError(f"experiment {slug!r} is {experiment.status}; reopen it before posting HITs")
    url = _participant_url(base_url or current_app.config.get("PUBLIC_BASE_URL"), slug)
    if reward is None:
        if experiment.reward_cents is None:
            raise MTurkError("no reward: pass --reward 1.50 (or create the experiment with --reward-cents)")
        reward = f"{Decimal(experiment.reward_cents) / 100:.2f}"
    try:
        reward = parse_reward(reward)
        quals = (
            []
            if no_qualifications
            else qualification_requirements(approval_rate, min_approved, parse_countries(countries))
        )
        spec = HitSpec(
            url=url,
            reward=reward,
            assignments=assignments,
            title=title or _default_title(experiment),
            description=description or _default_description(experiment),
            keywords=keywords,
            duration_s=duration_min * 60,
            lifetime_s=lifetime_h * 3600,
            auto_approve_s=auto_approve_h * 3600,
            frame_height=frame_height,
            annotation=f"jndlab:{slug}",
            qualifications=quals,
        )
        spec.create_hit_kwargs()  # validates the URL (https) and the frame height
    except ValueError as error:
        raise MTurkError(str(error)) from None
    environment = "production" if production else "sandbox"
    cost = estimated_cost(reward, assignments, n_hits)
    click.echo(
        f"{environment}: {n_hits} HIT(s) x {assignments} assignment(s) at ${reward} "
        f"(about ${cost} with MTurk's fee) -> {url}"
    )
    if dry_run:
        click.echo(json.dumps({k: v for k, v in spec.create_hit_kwargs().items()}, indent=2, default=str))
        return
    if production and not yes:
        click.confirm(f"This posts to the PRODUCTION marketplace and can cost about ${cost}. Continue?", abort=True)
    record_path = Path(record) if record else default_record_path()
    client = mturk_hits.make_client(environment)  # looked up here: tests stub it
    if exclude:
        workers = sorted(
            {r["worker_id"] for r in earlier_workers([_experiment(s).id for s in exclude]) if r["platform"] == "mturk"}
        )
        qid = exclusion_qualification(client, slug, workers, click.echo)
        spec.qualifications = [
            *spec.qualifications,
            {"QualificationTypeId": qid, "Comparator": "DoesNotExist", "ActionsGuarded": "DiscoverPreviewAndAccept"},
        ]
    # The landing's MTurk hand-off follows the environment the HITs live in (API.md).
    experiment.mturk_environment = environment
    db.session.commit()
    hits = create_hits(client, spec, n_hits, environment, slug=slug, record_path=record_path, echo=click.echo)
    click.echo(f"{len(hits)} HIT(s) created; recorded in {record_path}")
