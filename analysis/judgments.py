"""Every judgment in a listening-test database as one tidy table.

The database is read through ``listening_test.judgments_query`` (SQLAlchemy Core over
``listening_test.schema``, SELECT only, no Flask): the web app's CSV export lacks the
stimulus params, the screening results and the session's client info, and analysis
must not need an app (or a secret) to read data.

One row per answered trial (every kind: main, practice, catch_identical,
catch_obvious, screening). Columns are listed in ``BASE_COLUMNS``; the perturbed
stimulus' physical parameters follow as ``param_<key>`` columns (``param_snr_db``,
``param_rt60_s`` ...), sorted by key, with nested values kept as JSON text.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from listening_test.judgments_query import (
    JudgmentsError,
    display_url,
    experiments,
    judgment_rows,
    read_only,
    resolve_database_url,
    screening_rows,
)
from listening_test.screening import PAIR_KINDS
from perturbations.files import atomic_write_text

from .formatting import canonical_json, utc_iso

__all__ = [
    "BASE_COLUMNS",
    "CATCH_KINDS",
    "PAIR_KINDS",
    "PARAM_PREFIX",
    "JudgmentsError",
    "judged_pairs",
    "load_judgments",
    "main_trials",
    "pairs_table",
    "resolve_database_url",
    "tidy",
    "write_tidy_csv",
]

CATCH_KINDS = ("catch_identical", "catch_obvious")
PARAM_PREFIX = "param_"

BASE_COLUMNS = [
    "experiment_id",
    "experiment",
    "audio_root",
    "participant_id",
    "platform",
    "worker_id",
    "worker",
    "session",
    "session_stage",
    "screening_passed",
    "screening_results",
    "screening_n_trials",
    "screening_n_correct",
    "assignment_id",
    "hit_id",
    "study_id",
    "trial_id",
    "trial_index",
    "kind",
    "track_id",
    "reference",
    "family",
    "level",
    "test_stimulus",
    "identical",
    "reference_path",
    "test_path",
    "a_is_reference",
    "answer",
    "response_different",
    "expected_answer",
    "expected_different",
    "is_correct",
    "response_time_ms",
    "play_counts",
    "n_clips",
    "min_plays",
    "plays_reference",
    "plays_test",
    "served_at",
    "answered_at",
    "client_info",
    "session_client_info",
    "trial_spec",
    "params",
]


# ----------------------------------------------------------------------------- database access


def _fetch(url: str, experiment: str | None) -> tuple[list[dict], list[dict]]:
    """Raw judgment rows (``judgments_query.JUDGMENT_COLUMNS``) of the same/different
    experiments, or of the one named, and every screening result; one read-only snapshot."""
    with read_only(url) as conn:
        known = experiments(conn)
        if experiment is None:  # A/B preference answers are not same/different judgments
            rows = judgment_rows(conn, test_type="same_different")
        else:
            match = [e for e in known if e["slug"] == experiment or str(e["id"]) == str(experiment)]
            if not match:
                names = ", ".join(e["slug"] for e in known) or "none"
                raise JudgmentsError(f"{display_url(url)}: no experiment {experiment!r} (experiments: {names})")
            if match[0]["test_type"] != "same_different":
                raise JudgmentsError(
                    f"{display_url(url)}: experiment {experiment!r} is an A/B preference test, "
                    "not same/different: use python -m analysis preference"
                )
            rows = judgment_rows(conn, experiment_id=match[0]["id"])
        return rows, screening_rows(conn)


# ----------------------------------------------------------------------------- tidy table


def _different(answer: str | None, kind: str) -> float:
    if kind == "screening" or answer not in ("same", "different"):
        return math.nan
    return 1.0 if answer == "different" else 0.0


def _param_value(value):
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, str)):
        return value
    return canonical_json(value)


def tidy(rows: list[dict], screening: list[dict]) -> pd.DataFrame:
    """Turn raw joined rows into the tidy judgment table (pure; no I/O).

    ``rows``: judgment rows keyed by ``listening_test.judgments_query.JUDGMENT_COLUMNS``;
    ``screening``: its ``screening_rows``. Returns one row per judgment row, columns
    ``BASE_COLUMNS`` then the sorted ``param_*`` columns (an empty table has the base columns).
    """
    by_session: dict[int, dict] = {}
    for s in screening:
        entry = by_session.setdefault(s["session_id"], {"results": {}, "n": 0, "correct": 0})
        entry["results"][s["test"]] = {
            "n_trials": s["n_trials"],
            "n_correct": s["n_correct"],
            "passed": bool(s["passed"]),
        }
        entry["n"] += int(s["n_trials"])
        entry["correct"] += int(s["n_correct"])
    records = []
    for r in rows:
        kind = r["kind"]
        plays = list(r["play_counts"] or [])
        a_is_ref = r["a_is_reference"]
        is_pair = kind in PAIR_KINDS and len(plays) == 2 and a_is_ref is not None
        scr = by_session.get(r["session_db_id"])
        params = r["params"] if kind in PAIR_KINDS and isinstance(r["params"], dict) else {}
        expected = r["expected_answer"]
        rec = {
            "experiment_id": r["experiment_id"],
            "experiment": r["experiment"],
            "audio_root": r["audio_root"],
            "participant_id": r["participant_id"],
            "platform": r["platform"],
            "worker_id": r["worker_id"],
            "worker": f"{r['platform']}:{r['worker_id']}",
            "session": r["session"],
            "session_stage": r["session_stage"],
            "screening_passed": r["screening_passed"],
            "screening_results": canonical_json(scr["results"]) if scr else "",
            "screening_n_trials": scr["n"] if scr else None,
            "screening_n_correct": scr["correct"] if scr else None,
            "assignment_id": r["assignment_id"],
            "hit_id": r["hit_id"],
            "study_id": r["study_id"],
            "trial_id": r["trial_id"],
            "trial_index": r["trial_index"],
            "kind": kind,
            "track_id": r["track_id"],
            "reference": r["reference"],
            "family": r["family"],
            "level": r["level"],
            "test_stimulus": r["test_stimulus"],
            "identical": (r["test_stimulus_id"] == r["reference_stimulus_id"]) if kind in PAIR_KINDS else None,
            "reference_path": r["reference_path"],
            "test_path": r["test_path"],
            "a_is_reference": a_is_ref,
            "answer": r["answer"],
            "response_different": _different(r["answer"], kind),
            "expected_answer": expected,
            "expected_different": (1.0 if expected == "different" else 0.0)
            if expected in ("same", "different")
            else math.nan,
            "is_correct": r["is_correct"],
            "response_time_ms": r["response_time_ms"],
            "play_counts": canonical_json(plays),
            "n_clips": len(plays),
            "min_plays": min(plays) if plays else None,
            # slot 0 is clip A; a_is_reference says which slot held the reference
            "plays_reference": (plays[0] if a_is_ref else plays[1]) if is_pair else None,
            "plays_test": (plays[1] if a_is_ref else plays[0]) if is_pair else None,
            "served_at": utc_iso(r["served_at"]),
            "answered_at": utc_iso(r["answered_at"]),
            "client_info": canonical_json(r["client_info"] or {}),
            "session_client_info": canonical_json(r["session_client_info"] or {}),
            "trial_spec": canonical_json(r["trial_spec"] or {}),
            "params": canonical_json(params),
        }
        for key, value in params.items():
            rec[PARAM_PREFIX + key] = _param_value(value)
        records.append(rec)
    df = pd.DataFrame.from_records(records)
    if df.empty:
        df = pd.DataFrame(columns=BASE_COLUMNS)
    param_cols = sorted(c for c in df.columns if c.startswith(PARAM_PREFIX))
    df = df.reindex(columns=BASE_COLUMNS + param_cols)
    return _typed(df)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Stable dtypes: nullable ints and booleans, floats for levels and 0/1 responses."""
    for col in (
        "experiment_id",
        "participant_id",
        "trial_id",
        "trial_index",
        "track_id",
        "response_time_ms",
        "n_clips",
        "min_plays",
        "plays_reference",
        "plays_test",
        "screening_n_trials",
        "screening_n_correct",
    ):
        df[col] = pd.array(df[col].tolist(), dtype="Int64") if len(df) else df[col].astype("Int64")
    for col in ("screening_passed", "identical", "a_is_reference", "is_correct"):
        df[col] = pd.array(
            [None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v) for v in df[col]],
            dtype="boolean",
        )
    for col in ("level", "response_different", "expected_different"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df.reset_index(drop=True)


def load_judgments(url: str | None = None, *, experiment: str | None = None) -> pd.DataFrame:
    """Every answered same/different trial in the database at ``url`` (see
    ``resolve_database_url``) as a tidy table: one row per answered trial, columns
    ``BASE_COLUMNS`` then ``param_*``; levels on the 0-100 scale, ``response_time_ms``
    in milliseconds, times ISO-8601 UTC text. ``df.attrs["database_url"]`` names the
    database (password hidden).

    ``experiment``: a slug or id to keep one experiment. Rows are ordered by
    experiment, session and trial index.

    Raises:
        JudgmentsError: naming the URL, when the database is missing, unreachable or has
            no jndlab schema, when ``experiment`` names no experiment, or names an A/B
            preference experiment.
    """
    url = resolve_database_url(url)
    rows, screening = _fetch(url, experiment)
    df = tidy(rows, screening)
    df.attrs["database_url"] = display_url(url)
    return df


def main_trials(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["kind"] == "main"]


def judged_pairs(df: pd.DataFrame, kinds=("main",)) -> pd.DataFrame:
    """The rows of the tidy table ``df`` that judge a pair: of the trial ``kinds``, with a
    same/different answer and both stimulus paths (same columns, same order)."""
    return df[
        df["kind"].isin(kinds)
        & df["response_different"].notna()
        & df["reference_path"].notna()
        & df["test_path"].notna()
    ]


def pairs_table(df: pd.DataFrame, kinds=("main",)) -> pd.DataFrame:
    """Judged pairs with absolute audio paths: ref_audio, test_audio, label (int 0/1, 1 =
    "different"), reference (``experiment:stimulus_id``), family, level (0-100), worker,
    kind; one row per pair of ``judged_pairs(df, kinds)`` (the input ``analysis.agreement``
    and the trainer expect)."""
    sel = judged_pairs(df, kinds)
    return pd.DataFrame(
        {
            "ref_audio": [str(Path(root) / p) for root, p in zip(sel["audio_root"], sel["reference_path"])],
            "test_audio": [str(Path(root) / p) for root, p in zip(sel["audio_root"], sel["test_path"])],
            "label": sel["response_different"].astype("int64").to_numpy(),
            "reference": [f"{e}:{r}" for e, r in zip(sel["experiment"], sel["reference"])],
            "family": sel["family"].to_numpy(),
            "level": sel["level"].to_numpy(float),
            "worker": sel["worker"].to_numpy(),
            "kind": sel["kind"].to_numpy(),
        }
    ).reset_index(drop=True)


# ----------------------------------------------------------------------------- stable files


def _format_cell(value) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        # repr round-trips exactly and never depends on locale or pandas' float_format
        return repr(float(value))
    return str(value)


def write_tidy_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the tidy table as CSV: fixed column order, rows as given (already sorted),
    exact float text, '' for missing, true/false booleans, '\\n' line ends, atomic
    (``perturbations.files.atomic_write_text``). Returns ``path``; raises ``OSError``
    when it cannot be written."""
    import csv
    import io

    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(df.columns))
    for row in df.itertuples(index=False, name=None):
        writer.writerow([_format_cell(v) for v in row])
    atomic_write_text(path, buf.getvalue())
    return path
