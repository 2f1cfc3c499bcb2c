"""Every judgment in a listening-test database as one tidy table.

The database is read directly with SQLAlchemy Core (SELECT only) through the
table definitions of ``listening_test.models``: the web app's CSV export lacks
the stimulus params, the screening results and the session's client info, and
analysis must not need an app (or a secret) to read data.

One row per answered trial (every kind: main, practice, catch_identical,
catch_obvious, screening). Columns are listed in ``BASE_COLUMNS``; the perturbed
stimulus' physical parameters follow as ``param_<key>`` columns (``param_snr_db``,
``param_rt60_s`` ...), sorted by key, with nested values kept as JSON text.
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from perturbations.files import atomic_write_text

PAIR_KINDS = ("main", "practice", "catch_identical", "catch_obvious")
CATCH_KINDS = ("catch_identical", "catch_obvious")
PARAM_PREFIX = "param_"

BASE_COLUMNS = [
    "experiment_id", "experiment", "audio_root",
    "participant_id", "platform", "worker_id", "worker",
    "session", "session_stage", "screening_passed", "screening_results",
    "screening_n_trials", "screening_n_correct",
    "assignment_id", "hit_id", "study_id",
    "trial_id", "trial_index", "kind", "track_id",
    "reference", "family", "level", "test_stimulus", "identical",
    "reference_path", "test_path", "a_is_reference",
    "answer", "response_different", "expected_answer", "expected_different", "is_correct",
    "response_time_ms", "play_counts", "n_clips", "min_plays", "plays_reference", "plays_test",
    "served_at", "answered_at", "client_info", "session_client_info", "trial_spec", "params",
]


class JudgmentsError(ValueError):
    """The database cannot be read as a jndlab listening-test database; the message says why."""


# ----------------------------------------------------------------------------- database access


def resolve_database_url(url: str | None) -> str:
    """``url``, else ``DATABASE_URL``, else the web app's default SQLite file."""
    if url:
        return url
    from listening_test.config import default_database_url

    return os.environ.get("DATABASE_URL") or default_database_url()


def _display(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as given
        return url


def _engine(url: str):
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise JudgmentsError(f"{url}: not a database URL ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        # SQLite would silently create an empty file; a missing file is a typo.
        db_file = parsed.database
        if not db_file or db_file == ":memory:" or not Path(db_file).is_file():
            raise JudgmentsError(f"{_display(url)}: no SQLite database file at {db_file!r}")
    try:
        engine = create_engine(url)
        names = set(inspect(engine).get_table_names())
    except NoSuchModuleError as exc:
        raise JudgmentsError(f"{_display(url)}: unsupported database driver ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - connection problems of any driver
        raise JudgmentsError(f"{_display(url)}: cannot connect ({exc.__class__.__name__}: {exc})") from None
    needed = {"experiments", "stimuli", "participants", "sessions", "trials", "responses", "screening_results"}
    missing = needed - names
    if missing:
        engine.dispose()
        raise JudgmentsError(
            f"{_display(url)}: not a jndlab listening-test database (missing tables {sorted(missing)}; "
            "run `python -m listening_test db upgrade` on it first)"
        )
    return engine


def _utc_iso(value) -> str:
    """ISO-8601 in UTC with microseconds and a Z: SQLite returns naive datetimes (stored as UTC)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical_json(value) -> str:
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _fetch(url: str, experiment: str | None):
    """Raw rows of the joined tables (SELECT only, read-only transaction on PostgreSQL)."""
    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from listening_test.models import (Experiment, Participant, Response, ScreeningResult, Session,
                                       Stimulus, Trial)

    engine = _engine(url)
    ref, test = aliased(Stimulus), aliased(Stimulus)
    query = (
        select(
            Experiment.id.label("experiment_id"), Experiment.slug.label("experiment"),
            Experiment.audio_root,
            Participant.id.label("participant_id"), Participant.platform,
            Participant.platform_worker_id.label("worker_id"),
            Session.id.label("session_db_id"), Session.public_id.label("session"),
            Session.stage.label("session_stage"), Session.screening_passed,
            Session.assignment_id, Session.hit_id, Session.study_id,
            Session.client_info.label("session_client_info"),
            Trial.id.label("trial_id"), Trial.trial_index, Trial.kind, Trial.track_id,
            Trial.family, Trial.level, Trial.a_is_reference, Trial.expected_answer,
            Trial.spec.label("trial_spec"), Trial.served_at,
            Trial.reference_stimulus_id, Trial.test_stimulus_id,
            ref.stimulus_id.label("reference"), ref.path.label("reference_path"),
            test.stimulus_id.label("test_stimulus"), test.path.label("test_path"),
            test.params.label("params"),
            Response.answer, Response.is_correct, Response.response_time_ms, Response.play_counts,
            Response.client_info, Response.created_at.label("answered_at"),
        )
        .join(Trial, Trial.id == Response.trial_id)
        .join(Session, Session.id == Trial.session_id)
        .join(Participant, Participant.id == Session.participant_id)
        .join(Experiment, Experiment.id == Session.experiment_id)
        .outerjoin(ref, ref.id == Trial.reference_stimulus_id)
        .outerjoin(test, test.id == Trial.test_stimulus_id)
        .order_by(Experiment.id, Session.id, Trial.trial_index)
    )
    screening_q = select(ScreeningResult.session_id, ScreeningResult.test, ScreeningResult.n_trials,
                         ScreeningResult.n_correct, ScreeningResult.passed).order_by(
        ScreeningResult.session_id, ScreeningResult.test)
    experiments_q = select(Experiment.id, Experiment.slug, Experiment.test_type).order_by(Experiment.id)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            slugs = conn.execute(experiments_q).all()
            if experiment is not None:
                ids = [(i, t) for i, s, t in slugs if s == experiment or str(i) == str(experiment)]
                if not ids:
                    known = ", ".join(s for _, s, _ in slugs) or "none"
                    raise JudgmentsError(f"{_display(url)}: no experiment {experiment!r} (experiments: {known})")
                if ids[0][1] != "same_different":
                    raise JudgmentsError(f"{_display(url)}: experiment {experiment!r} is an A/B preference test, "
                                         "not same/different: use python -m analysis preference")
                query = query.where(Experiment.id == ids[0][0])
            else:  # A/B preference answers are not same/different judgments
                query = query.where(Experiment.test_type == "same_different")
            rows = [r._asdict() for r in conn.execute(query)]
            screening = [r._asdict() for r in conn.execute(screening_q)]
            conn.rollback()
    finally:
        engine.dispose()
    return rows, screening


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
    return _canonical_json(value)


def tidy(rows: list[dict], screening: list[dict]) -> pd.DataFrame:
    """Turn raw joined rows into the tidy judgment table (pure; no I/O)."""
    by_session: dict[int, dict] = {}
    for s in screening:
        entry = by_session.setdefault(s["session_id"], {"results": {}, "n": 0, "correct": 0})
        entry["results"][s["test"]] = {"n_trials": s["n_trials"], "n_correct": s["n_correct"],
                                       "passed": bool(s["passed"])}
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
            "experiment_id": r["experiment_id"], "experiment": r["experiment"], "audio_root": r["audio_root"],
            "participant_id": r["participant_id"], "platform": r["platform"], "worker_id": r["worker_id"],
            "worker": f"{r['platform']}:{r['worker_id']}",
            "session": r["session"], "session_stage": r["session_stage"],
            "screening_passed": r["screening_passed"],
            "screening_results": _canonical_json(scr["results"]) if scr else "",
            "screening_n_trials": scr["n"] if scr else None, "screening_n_correct": scr["correct"] if scr else None,
            "assignment_id": r["assignment_id"], "hit_id": r["hit_id"], "study_id": r["study_id"],
            "trial_id": r["trial_id"], "trial_index": r["trial_index"], "kind": kind, "track_id": r["track_id"],
            "reference": r["reference"], "family": r["family"], "level": r["level"],
            "test_stimulus": r["test_stimulus"],
            "identical": (r["test_stimulus_id"] == r["reference_stimulus_id"]) if kind in PAIR_KINDS else None,
            "reference_path": r["reference_path"], "test_path": r["test_path"], "a_is_reference": a_is_ref,
            "answer": r["answer"], "response_different": _different(r["answer"], kind),
            "expected_answer": expected,
            "expected_different": (1.0 if expected == "different" else 0.0) if expected in ("same", "different") else math.nan,
            "is_correct": r["is_correct"], "response_time_ms": r["response_time_ms"],
            "play_counts": _canonical_json(plays), "n_clips": len(plays),
            "min_plays": min(plays) if plays else None,
            # slot 0 is clip A; a_is_reference says which slot held the reference
            "plays_reference": (plays[0] if a_is_ref else plays[1]) if is_pair else None,
            "plays_test": (plays[1] if a_is_ref else plays[0]) if is_pair else None,
            "served_at": _utc_iso(r["served_at"]), "answered_at": _utc_iso(r["answered_at"]),
            "client_info": _canonical_json(r["client_info"] or {}),
            "session_client_info": _canonical_json(r["session_client_info"] or {}),
            "trial_spec": _canonical_json(r["trial_spec"] or {}),
            "params": _canonical_json(params),
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
    for col in ("experiment_id", "participant_id", "trial_id", "trial_index", "track_id", "response_time_ms",
                "n_clips", "min_plays", "plays_reference", "plays_test", "screening_n_trials", "screening_n_correct"):
        df[col] = pd.array(df[col].tolist(), dtype="Int64") if len(df) else df[col].astype("Int64")
    for col in ("screening_passed", "identical", "a_is_reference", "is_correct"):
        df[col] = pd.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)
                            for v in df[col]], dtype="boolean")
    for col in ("level", "response_different", "expected_different"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df.reset_index(drop=True)


def load_judgments(url: str | None = None, *, experiment: str | None = None) -> pd.DataFrame:
    """Every answered trial in the database at ``url`` (see ``resolve_database_url``) as a tidy table.

    ``experiment``: a slug or id to keep one experiment. Rows are ordered by
    experiment, session and trial index. Raises ``JudgmentsError`` naming the URL
    when the database is missing, unreachable or has no jndlab schema.
    """
    url = resolve_database_url(url)
    rows, screening = _fetch(url, experiment)
    df = tidy(rows, screening)
    df.attrs["database_url"] = _display(url)
    return df


def main_trials(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["kind"] == "main"]


def pairs_table(df: pd.DataFrame, kinds=("main",)) -> pd.DataFrame:
    """Judged pairs with absolute audio paths: ref_audio, test_audio, label, reference,
    family, level, worker (the input ``analysis.agreement`` and the trainer expect)."""
    sel = df[df["kind"].isin(kinds) & df["response_different"].notna()
             & df["reference_path"].notna() & df["test_path"].notna()]
    return pd.DataFrame({
        "ref_audio": [str(Path(root) / p) for root, p in zip(sel["audio_root"], sel["reference_path"])],
        "test_audio": [str(Path(root) / p) for root, p in zip(sel["audio_root"], sel["test_path"])],
        "label": sel["response_different"].astype("int64").to_numpy(),
        "reference": [f"{e}:{r}" for e, r in zip(sel["experiment"], sel["reference"])],
        "family": sel["family"].to_numpy(), "level": sel["level"].to_numpy(float),
        "worker": sel["worker"].to_numpy(), "kind": sel["kind"].to_numpy(),
    }).reset_index(drop=True)


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
    exact float text, '' for missing, true/false booleans, '\\n' line ends, atomic."""
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


def triplet_rows(df: pd.DataFrame, kinds=("main",), relative_to: str | os.PathLike | None = None
                 ) -> tuple[pd.DataFrame, str]:
    """(ref, perturbed, label) rows for a DPAM triplet file and the audio root they are relative to.

    Paths are relative to the experiments' audio root (the manifest's folder). With
    several experiments whose audio roots differ, ``relative_to`` must name one folder
    and every path is rewritten relative to it.
    """
    sel = df[df["kind"].isin(kinds) & df["response_different"].notna()
             & df["reference_path"].notna() & df["test_path"].notna()]
    roots = sorted(set(sel["audio_root"]))
    if relative_to is None:
        if len(roots) > 1:
            raise JudgmentsError(
                f"judgments come from {len(roots)} experiments with different audio roots ({', '.join(roots)}); "
                "pass --audio-root-relative-to DIR or --experiment SLUG")
        root = roots[0] if roots else ""
        refs, perts = sel["reference_path"].tolist(), sel["test_path"].tolist()
    else:
        root = str(Path(relative_to).resolve())
        refs = [Path(os.path.relpath(Path(a) / p, root)).as_posix() for a, p in zip(sel["audio_root"], sel["reference_path"])]
        perts = [Path(os.path.relpath(Path(a) / p, root)).as_posix() for a, p in zip(sel["audio_root"], sel["test_path"])]
    out = pd.DataFrame({"ref": refs, "perturbed": perts, "label": sel["response_different"].astype("int64").to_numpy()})
    return out, root
