"""``python -m se ab-test``: a pairwise-preference listening test of two (or more) enhancers.

The DPAM paper judged its enhancement models by asking listeners which of two outputs
sounds closer to the clean recording. This command sets up the same test in the
jndlab listening-test app from the systems' outputs on a held-out set:

1. ``perturbations.ab_set.build_ab_set``: loudness-matched copies of the clean clips,
   every system's output and the noisy input (the anchor of the catch trials), with a
   manifest;
2. an ``ab_preference`` experiment in the app's database (migrated first, so a new
   SQLite file works), created with ``listening_test.manifest_import.create_experiment``.

It prints the participant URL and the next steps: serve the app, run listeners (or the
simulated crowd, ``python -m listening_test simulate``), then ``python -m analysis
preference`` for the preference share with its binomial confidence interval.

``--simulate N`` does those steps at once as a dry run: it serves the app on a local
port, sends N simulated listeners (``listening_test.simulation``: they prefer the output
nearer the clean clip by an auditory model) through the real HTTP flow, and writes the
preference report to ``--report`` (default OUT/report). Use it to check a design (items,
repeats, catch rate) before paying listeners, or to compare systems with virtual ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
from pathlib import Path

from se.data import HELDOUT_CLEAN, HELDOUT_NOISY


def _named_folder(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {text!r}")
    return name, folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--heldout",
        help=f"held-out set (se make-heldout): clean clips from {HELDOUT_CLEAN}/ and, "
        f"unless --anchor is given, the anchor noisy={HELDOUT_NOISY}/",
    )
    p.add_argument("--clean", help="folder of clean clips (instead of --heldout)")
    p.add_argument(
        "--system",
        action="append",
        type=_named_folder,
        required=True,
        metavar="NAME=FOLDER",
        help="a system's outputs, e.g. l1=runs/a/eval/enhanced (se evaluate writes enhanced/); give at least two",
    )
    p.add_argument(
        "--anchor",
        type=_named_folder,
        metavar="NAME=FOLDER",
        help="the system catch and practice trials set against the clean clip (default with "
        f"--heldout: noisy=HELDOUT/{HELDOUT_NOISY})",
    )
    p.add_argument("--out", required=True, help="folder for the stimulus set (audio/ and manifest.csv)")
    p.add_argument("--name", help="experiment name (default: the --out folder's name)")
    p.add_argument(
        "--database-url", help="the listening-test database (default: DATABASE_URL, else instance/jndlab.sqlite)"
    )
    p.add_argument(
        "--items-per-participant",
        type=int,
        default=20,
        help="clean items each participant judges (every system pair of each) (default 20)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="presentations of each item and pair per participant, orders alternating (default 1)",
    )
    p.add_argument(
        "--catch-rate",
        type=float,
        default=0.1,
        help="share of main-phase trials that set the clean clip against the anchor (default 0.1)",
    )
    p.add_argument("--practice-trials", type=int, default=2)
    p.add_argument(
        "--config",
        type=json.loads,
        default={},
        metavar="JSON",
        help="further flow settings (listening_test.flow_config), e.g. '{\"screening\": ...}'",
    )
    p.add_argument("--max-items", type=int, help="a seeded random subset of the held-out clips")
    p.add_argument(
        "--no-match-loudness",
        action="store_true",
        help="keep every output at its own level (default: match each to its clean clip)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --max-items and of --simulate's population")
    p.add_argument(
        "--simulate",
        type=int,
        metavar="N",
        help="dry run: serve locally, run N simulated listeners, write the preference report",
    )
    p.add_argument("--bad-workers", default="0", help="with --simulate: e.g. 0.2, or random=1,same=1 (default 0)")
    p.add_argument("--report", help="with --simulate: report folder (default OUT/report)")


def _folders(args) -> tuple[Path, tuple[str, str] | None]:
    if bool(args.heldout) == bool(args.clean):
        raise ValueError("give exactly one of --heldout and --clean")
    if args.clean:
        return Path(args.clean), args.anchor
    heldout = Path(args.heldout)
    clean = heldout / HELDOUT_CLEAN
    if not clean.is_dir():
        raise FileNotFoundError(f"{heldout}: no {HELDOUT_CLEAN}/ folder; is it a held-out set (se make-heldout)?")
    return clean, args.anchor or ("noisy", str(heldout / HELDOUT_NOISY))


def run(args) -> int:
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the migration's chatter is not news here
    from flask_migrate import upgrade

    from listening_test import create_app
    from listening_test.config import default_database_url
    from listening_test.db import db
    from listening_test.manifest_import import create_experiment
    from perturbations.ab_set import build_ab_set

    clean, anchor = _folders(args)
    systems = dict(args.system)
    if len(systems) != len(args.system):
        raise ValueError("each --system needs its own name")
    summary = build_ab_set(
        clean,
        systems,
        args.out,
        anchor=anchor,
        match_loudness=not args.no_match_loudness,
        max_items=args.max_items,
        seed=args.seed,
    )
    print(summary.format())
    config = {
        "references_per_participant": min(args.items_per_participant, summary.items),
        "catch_rate": args.catch_rate,
        "practice_trials": args.practice_trials,
        "anchor_system": summary.anchor,
        **args.config,
    }
    url = args.database_url or os.environ.get("DATABASE_URL") or default_database_url()
    # Only rows are written here (nothing is signed), so a throwaway key satisfies the
    # app factory when SECRET_KEY is not set.
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32)}
    )
    with app.app_context():
        upgrade(directory=app.config["MIGRATIONS_DIR"])
        experiment = create_experiment(
            db.session(),  # the app context's Session behind the scoped proxy
            summary.manifest,
            name=args.name or Path(args.out).name,
            test_type="ab_preference",
            procedure_config={"repeats": args.repeats},
            config=config,
        )
        db.session.commit()
        slug = experiment.slug
        db.engine.dispose()
    if args.simulate:
        return _dry_run(args, url, slug)
    print(
        f"created A/B experiment {slug!r} in {url}\n"
        f"participant URL: /e/{slug}   (serve: DATABASE_URL={url} python -m listening_test serve)\n"
        f"simulated listeners: python -m listening_test simulate --url http://127.0.0.1:5000 --experiment {slug} "
        f"--participants 20\n"
        f"preference share: python -m analysis preference --db {url} --experiment {slug} --out ab_report"
    )
    return 0


def _dry_run(args, url: str, slug: str) -> int:
    """Serve the experiment locally, run simulated listeners over HTTP, write the preference report."""
    from analysis.preference import write_preference_report
    from listening_test import create_app
    from listening_test.local_server import local_server
    from listening_test.simulation.runner import simulate

    if args.simulate < 1:
        raise ValueError("--simulate needs at least 1 listener")
    report = Path(args.report or Path(args.out) / "report")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32)}
    )
    with local_server(app) as base:
        print(f"created A/B experiment {slug!r} in {url}; {args.simulate} simulated listeners at {base}/e/{slug}")
        simulate(
            url=base,
            slug=slug,
            participants=args.simulate,
            concurrency=min(4, args.simulate),
            bad_workers=args.bad_workers,
            seed=args.seed,
            out_dir=report / "simulation",
            progress=True,
        )
    analysis = write_preference_report(url, report, experiment=slug)
    print("\n".join(analysis.summary_lines()))
    print(f"report: {analysis.index_html}")
    return 0
