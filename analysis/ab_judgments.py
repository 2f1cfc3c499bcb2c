"""The answers of an A/B preference experiment as one tidy table (``AB_COLUMNS``).

The A/B counterpart of ``analysis.judgments``: the database is read through the same
Flask-free query layer (``listening_test.judgments_query``, SELECT only, one read-only
snapshot) and each answered trial becomes one row, in the same cell conventions
(``analysis.formatting``: ISO-8601 UTC times, canonical JSON), ready for
``analysis.screening.screen_ab_workers`` and ``analysis.preference``.

The storage contract: ``experiments.test_type = "ab_preference"``, one trial per
judgment with ``spec = {"systems": [system_A, system_B], "stimuli": [id_A, id_B]}``,
answers "A"/"B"; catch trials (kind ``catch_anchor``) put the clean reference against an
anchor, and ``play_counts`` holds the plays of the reference, clip A and clip B.
"""

from __future__ import annotations

import math
import os

import pandas as pd

from listening_test import judgments_query
from listening_test.judgments_query import JudgmentsError

from .formatting import canonical_json, utc_iso

__all__ = ["AB_COLUMNS", "ANSWERS", "CATCH_KIND", "TEST_TYPE", "load_ab_judgments", "tidy_ab"]

TEST_TYPE = "ab_preference"
CATCH_KIND = "catch_anchor"
ANSWERS = ("A", "B")

AB_COLUMNS = [
    "experiment_id",
    "experiment",
    "participant_id",
    "platform",
    "worker_id",
    "worker",
    "session",
    "session_stage",
    "screening_passed",
    "trial_id",
    "trial_index",
    "kind",
    "pair",
    "item",
    "system_a",
    "system_b",
    "stimulus_a",
    "stimulus_b",
    "answer",
    "preferred",
    "expected_answer",
    "is_correct",
    "response_time_ms",
    "play_counts",
    "plays_reference",
    "plays_a",
    "plays_b",
    "skipped_playback",
    "served_at",
    "answered_at",
]


# ----------------------------------------------------------------------------- loading


def _pick_experiment(source: str, experiments: list, experiment: str | None):
    """The (id, slug, test_type) row of the requested ab_preference experiment.

    Raises JudgmentsError naming ``source``: no (or several, unnamed) A/B experiments, no
    experiment ``experiment``, or one that is not an A/B test."""
    known = ", ".join(f"{slug} ({test_type})" for _, slug, test_type in experiments) or "none"
    if experiment is None:
        ab = [e for e in experiments if e[2] == TEST_TYPE]
        if len(ab) == 1:
            return ab[0]
        why = "no ab_preference experiment" if not ab else "several ab_preference experiments; name one"
        raise JudgmentsError(f"{source}: {why} (experiments: {known})")
    match = [e for e in experiments if e[1] == str(experiment) or str(e[0]) == str(experiment)]
    if not match:
        raise JudgmentsError(f"{source}: no experiment {str(experiment)!r} (experiments: {known})")
    if match[0][2] != TEST_TYPE:
        raise JudgmentsError(
            f"{source}: experiment {match[0][1]!r} is a {match[0][2]} test, not {TEST_TYPE} "
            "(its judgments are analysed by `python -m analysis report`)"
        )
    return match[0]


def _fetch(url: str, experiment: str | None):
    """Raw rows of one A/B experiment (``listening_test.judgments_query``; one read-only snapshot)."""
    with judgments_query.read_only(url) as conn:
        experiments = [(e["id"], e["slug"], e["test_type"]) for e in judgments_query.experiments(conn)]
        exp_id, slug, _ = _pick_experiment(judgments_query.display_url(url), experiments, experiment)
        stimuli = judgments_query.stimulus_ids(conn, exp_id)
        rows = judgments_query.judgment_rows(conn, experiment_id=exp_id)
    return (exp_id, slug), stimuli, rows


def _row(r: dict, exp_id: int, slug: str, stimuli: dict[int, str]) -> dict:
    spec = r["trial_spec"] if isinstance(r["trial_spec"], dict) else {}
    systems = list(spec.get("systems") or [])
    ids = list(spec.get("stimuli") or [])
    system_a, system_b = (systems + [None, None])[:2]
    stim_a = stimuli.get(ids[0]) if len(ids) > 0 else stimuli.get(r["test_stimulus_id"])
    stim_b = stimuli.get(ids[1]) if len(ids) > 1 else None
    answer = r["answer"]
    preferred = {"A": system_a, "B": system_b}.get(answer) if len(systems) == 2 else None
    pair = r["family"] or ("|".join(sorted(systems)) if len(systems) == 2 else None)
    plays = [int(p) for p in (r["play_counts"] or [])]
    # A/B slots: 0 = the clean reference, 1 = clip A, 2 = clip B (screening trials have intervals 1-3)
    slots = plays if len(plays) == 3 and r["kind"] != "screening" else [None, None, None]
    is_correct = r["is_correct"]
    if is_correct is None and r["expected_answer"] in ANSWERS and answer in ANSWERS:
        is_correct = answer == r["expected_answer"]
    return {
        "experiment_id": exp_id,
        "experiment": slug,
        "participant_id": r["participant_id"],
        "platform": r["platform"],
        "worker_id": r["worker_id"],
        "worker": f"{r['platform']}:{r['worker_id']}",
        "session": r["session"],
        "session_stage": r["session_stage"],
        "screening_passed": r["screening_passed"],
        "trial_id": r["trial_id"],
        "trial_index": r["trial_index"],
        "kind": r["kind"],
        "pair": pair,
        "item": r["reference"],
        "system_a": system_a,
        "system_b": system_b,
        "stimulus_a": stim_a,
        "stimulus_b": stim_b,
        "answer": answer,
        "preferred": preferred,
        "expected_answer": r["expected_answer"],
        "is_correct": is_correct,
        "response_time_ms": r["response_time_ms"],
        "play_counts": canonical_json(plays),
        "plays_reference": slots[0],
        "plays_a": slots[1],
        "plays_b": slots[2],
        "skipped_playback": (min(plays) == 0) if plays else None,
        "served_at": utc_iso(r["served_at"]),
        "answered_at": utc_iso(r["answered_at"]),
    }


def tidy_ab(rows: list[dict], exp_id: int, slug: str, stimuli: dict[int, str]) -> pd.DataFrame:
    """Raw joined rows as the tidy A/B table (pure; one row per answered trial, every kind).

    ``rows``: judgment rows keyed by ``listening_test.judgments_query.JUDGMENT_COLUMNS``;
    ``stimuli``: database id -> stimulus_id. Columns ``AB_COLUMNS``: nullable integers
    (Int64) for ids, indices, response times and play counts, nullable booleans for
    screening_passed, is_correct and skipped_playback, ISO-8601 UTC times. Raises nothing.
    """
    df = pd.DataFrame.from_records([_row(r, exp_id, slug, stimuli) for r in rows], columns=AB_COLUMNS)
    for col in (
        "experiment_id",
        "participant_id",
        "trial_id",
        "trial_index",
        "response_time_ms",
        "plays_reference",
        "plays_a",
        "plays_b",
    ):
        df[col] = pd.array(
            [None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v) for v in df[col]], dtype="Int64"
        )
    for col in ("screening_passed", "is_correct", "skipped_playback"):
        df[col] = pd.array(
            [None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v) for v in df[col]],
            dtype="boolean",
        )
    return df.reset_index(drop=True)


def load_ab_judgments(
    db: str | os.PathLike | None = None, *, experiment: str | None = None, require_main: bool = True
) -> pd.DataFrame:
    """Every answered trial of one ``ab_preference`` experiment as a tidy table (``AB_COLUMNS``).

    ``db``: a SQLAlchemy URL (SQLite, PostgreSQL) or the path of a SQLite file; None reads
    ``DATABASE_URL``. ``experiment``: slug or id; None picks the database's only A/B
    experiment. Raises ``JudgmentsError`` naming the database and the problem: no such file,
    not a jndlab database, no such experiment, not an A/B experiment, no answered main
    trials yet (unless ``require_main`` is False).
    """
    url = judgments_query.database_url(db)
    (exp_id, slug), stimuli, rows = _fetch(url, experiment)
    df = tidy_ab(rows, exp_id, slug, stimuli)
    source = judgments_query.display_url(url)
    if require_main and not (df["kind"] == "main").any():
        counts = ", ".join(f"{k}: {n}" for k, n in df["kind"].value_counts().sort_index().items())
        raise JudgmentsError(
            f"{source}: experiment {slug!r} has no answered main trials yet "
            f"({'answered: ' + counts if counts else 'no answered trials at all'})"
        )
    df.attrs["database_url"] = source
    return df
