"""``python -m listening_test simulate``: a crowd of virtual listeners against a live server.

Kept free of heavy imports at module level: the server registers this command too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


def _admin_get(base: str, path: str, token: str | None, timeout: float = 30.0):
    import requests

    if not token:
        return None
    r = requests.get(
        base.rstrip("/") + "/admin/api" + path, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
    )
    if r.status_code != 200:
        raise click.ClickException(f"admin API {path}: {r.status_code} {r.text[:200]}")
    return r.json()


def _pick_experiment(url: str, slug: str | None, token: str | None) -> str:
    if slug:
        return slug
    listing = _admin_get(url, "/experiments", token)
    if listing is None:
        raise click.ClickException("--experiment SLUG is required (or set ADMIN_TOKEN to pick the only active one)")
    active = [e["slug"] for e in listing.get("experiments", []) if e.get("status") == "active"]
    if len(active) != 1:
        raise click.ClickException(
            f"{len(active)} active experiments ({', '.join(active) or 'none'}): choose one with --experiment SLUG"
        )
    return active[0]


@click.command(
    "simulate",
    help="Run simulated listeners against a live server, through the browser's HTTP API. "
    "Each acknowledged answer is appended to OUT_DIR/answers.jsonl at once; SIGTERM or "
    "Ctrl-C stops new participants and requests, writes truth.json and summary.json with "
    "what the run has, and exits with 128+signal (a second one stops at once).",
)
@click.option("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:5000")
@click.option("--participants", "n", default=30, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--experiment", "slug", default=None, help="experiment slug (default: the only active one; needs ADMIN_TOKEN)"
)
@click.option(
    "--bad-workers",
    default="0",
    show_default=True,
    help="fraction of bad workers (split evenly over the kinds), or counts per kind, "
    "e.g. 'random=2,same=1,skip=1,headphones=1'",
)
@click.option("--seed", default=0, show_default=True, type=int, help="seed of the population and every answer")
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="the stimulus set's manifest.csv: lets listeners recognise the family they hear "
    "(else one default threshold) and adds level-scale JNDs to the truth file",
)
@click.option("--platform", type=click.Choice(["mixed", "mturk", "prolific"]), default="mixed", show_default=True)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default="out/simulate",
    show_default=True,
    help="where truth.json, answers.jsonl and summary.json go",
)
@click.option(
    "--truth-out", type=click.Path(dir_okay=False), default=None, help="truth JSON path (default OUT_DIR/truth.json)"
)
@click.option(
    "--admin-token",
    envvar="ADMIN_TOKEN",
    default=None,
    help="admin token (env ADMIN_TOKEN): picks the experiment and adds catch accuracy per kind",
)
@click.option(
    "--reload-rate",
    default=0.02,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="probability of a page reload before an answer (must return the same trial)",
)
@click.option(
    "--double-submit-rate",
    default=0.02,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="probability of a double-clicked answer (must be acknowledged as duplicate)",
)
@click.option(
    "--thresholds",
    "thresholds_json",
    default=None,
    help="mean thresholds per family in distance units, as JSON, e.g. '{\"noise\": 40}' "
    "(default: listening_test.simulation.population.FAMILY_THRESHOLDS)",
)
@click.option("--timeout", default=30.0, show_default=True, type=float, help="seconds per HTTP request")
@click.option("--no-progress", is_flag=True, help="hide the progress bar")
def simulate_command(
    url,
    n,
    concurrency,
    slug,
    bad_workers,
    seed,
    manifest,
    platform,
    out_dir,
    truth_out,
    admin_token,
    reload_rate,
    double_submit_rate,
    thresholds_json,
    timeout,
    no_progress,
) -> None:
    from .population import FAMILY_THRESHOLDS, PopulationConfig
    from .runner import PLATFORMS, simulate

    population = None
    if thresholds_json:
        try:
            extra = json.loads(thresholds_json)
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"not JSON ({error})", param_hint="--thresholds") from None
        if not isinstance(extra, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in extra.values()):
            raise click.BadParameter("must be a JSON object of positive numbers", param_hint="--thresholds")
        population = PopulationConfig(family_thresholds={**FAMILY_THRESHOLDS, **extra}, platforms=PLATFORMS[platform])
    try:
        slug = _pick_experiment(url, slug, admin_token)
        summary = simulate(
            url=url,
            slug=slug,
            participants=n,
            concurrency=concurrency,
            bad_workers=bad_workers,
            seed=seed,
            manifest=manifest,
            platform=platform,
            out_dir=Path(out_dir),
            truth_out=Path(truth_out) if truth_out else None,
            reload_rate=reload_rate,
            double_submit_rate=double_submit_rate,
            timeout_s=timeout,
            progress=not no_progress,
            stats_fetcher=lambda: _admin_get(url, f"/experiments/{slug}/stats", admin_token),
            echo=click.echo,
            population_config=population,
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if summary.get("interrupted"):
        import signal

        click.echo(
            f"simulate: interrupted by {summary['interrupted']}; the record holds what was acknowledged", err=True
        )
        sys.exit(128 + int(getattr(signal, summary["interrupted"])))
    if summary["fatal_errors"] or summary["contract_violations"]:
        click.echo("simulate: some participants failed (see above)", err=True)
        sys.exit(1)
