"""Read-only queries over a listening-test database, with no Flask import.

The judgments are one query, written here once: every answered trial, Response JOIN
Trial JOIN Session JOIN Participant JOIN Experiment, with the trial's reference and test
stimuli (outer joins: screening trials have none), ordered by experiment, session and
trial index. ``listening_test.export`` (the web app's downloads) and ``analysis`` (the
tidy tables) read it through ``iter_judgments`` / ``judgment_rows``; the columns are
``JUDGMENT_COLUMNS``.

A *source* is a database URL (opened and checked by ``open_database``, disposed after
use), a SQLAlchemy ``Engine``, or an open ``Connection`` (used as it is, in the
caller's transaction: the web app passes its session's connection). URL and Engine
sources are read in one transaction that is rolled back at the end, READ ONLY on
PostgreSQL. Only SELECT statements are issued.

The tables are those of ``listening_test.schema`` (built by the migrations).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, select
from sqlalchemy.engine import Connection, Engine, RowMapping

from . import schema

if TYPE_CHECKING:
    import pandas as pd

Source = str | Engine | Connection

#: the tables a jndlab listening-test database has (``open_database`` checks them)
REQUIRED_TABLES = ("experiments", "stimuli", "participants", "sessions", "trials", "responses", "screening_results")


class JudgmentsError(ValueError):
    """The database cannot be read as a jndlab listening-test database; the message says why
    and names the database (password hidden)."""


# ----------------------------------------------------------------------------- opening


def resolve_database_url(url: str | None) -> str:
    """``url``, else the ``DATABASE_URL`` environment variable, else the web app's default
    SQLite file (``listening_test.config.default_database_url``: ./instance/jndlab.sqlite)."""
    if url:
        return url
    from .config import default_database_url

    return os.environ.get("DATABASE_URL") or default_database_url()


def database_url(db: str | os.PathLike | None) -> str:
    """A SQLAlchemy URL as given, a plain file path as a SQLite URL (absolute), None as
    ``resolve_database_url(None)``."""
    if db is None:
        return resolve_database_url(None)
    text = str(db)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def display_url(url: str) -> str:
    """``url`` with its password hidden, for messages; as given when SQLAlchemy cannot parse it."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse is shown as given
        return url


def open_database(url: str) -> Engine:
    """An Engine on the listening-test database at ``url``, checked before use.

    The caller disposes of it. A SQLite URL must name an existing file (SQLite would
    silently create an empty one: a missing file is a typo).

    Raises:
        JudgmentsError: not a database URL, no such SQLite file, an unsupported driver, a
            database that cannot be reached, or one without the jndlab tables
            (``REQUIRED_TABLES``; the message says to run ``db upgrade``).
    """
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = display_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise JudgmentsError(f"{url}: not a database URL ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        db_file = parsed.database
        if not db_file or db_file == ":memory:" or not Path(db_file).is_file():
            raise JudgmentsError(f"{shown}: no SQLite database file at {db_file!r}")
    try:
        engine = create_engine(url)
        names = set(inspect(engine).get_table_names())
    except NoSuchModuleError as exc:
        raise JudgmentsError(f"{shown}: unsupported database driver ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - connection problems of any driver
        raise JudgmentsError(f"{shown}: cannot connect ({exc.__class__.__name__}: {exc})") from None
    missing = set(REQUIRED_TABLES) - names
    if missing:
        engine.dispose()
        raise JudgmentsError(
            f"{shown}: not a jndlab listening-test database (missing tables {sorted(missing)}; "
            "run `python -m listening_test db upgrade` on it first)"
        )
    return engine


@contextmanager
def read_only(source: Source) -> Iterator[Connection]:
    """A connection on ``source`` for SELECTs (see the module docstring for sources).

    A URL is opened with ``open_database`` (its ``JudgmentsError`` propagates) and its
    engine disposed at the end. For a URL or an Engine the reads run in one
    transaction (one snapshot on PostgreSQL, where it is also READ ONLY) that is
    rolled back at the end; a Connection is yielded as it is.
    """
    if isinstance(source, Connection):
        yield source
        return
    engine = open_database(source) if isinstance(source, str) else source
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            try:
                yield conn
            finally:
                conn.rollback()
    finally:
        if isinstance(source, str):
            engine.dispose()


# ----------------------------------------------------------------------------- queries

_e, _p, _s, _t, _r = schema.experiments, schema.participants, schema.sessions, schema.trials, schema.responses
_ref, _test = schema.stimuli.alias("ref"), schema.stimuli.alias("test")

#: label -> column of the judgments query, in its order
_COLUMNS = {
    "experiment_id": _e.c.id,
    "experiment": _e.c.slug,
    "test_type": _e.c.test_type,
    "audio_root": _e.c.audio_root,
    "participant_id": _p.c.id,
    "platform": _p.c.platform,
    "worker_id": _p.c.platform_worker_id,
    "session_db_id": _s.c.id,
    "session": _s.c.public_id,
    "session_stage": _s.c.stage,
    "screening_passed": _s.c.screening_passed,
    "assignment_id": _s.c.assignment_id,
    "hit_id": _s.c.hit_id,
    "study_id": _s.c.study_id,
    "session_client_info": _s.c.client_info,
    "trial_id": _t.c.id,
    "trial_index": _t.c.trial_index,
    "kind": _t.c.kind,
    "track_id": _t.c.track_id,
    "family": _t.c.family,
    "level": _t.c.level,
    "a_is_reference": _t.c.a_is_reference,
    "expected_answer": _t.c.expected_answer,
    "trial_spec": _t.c.spec,
    "served_at": _t.c.served_at,
    "reference_stimulus_id": _t.c.reference_stimulus_id,
    "test_stimulus_id": _t.c.test_stimulus_id,
    "reference": _ref.c.stimulus_id,
    "reference_path": _ref.c.path,
    "test_stimulus": _test.c.stimulus_id,
    "test_path": _test.c.path,
    "params": _test.c.params,
    "answer": _r.c.answer,
    "is_correct": _r.c.is_correct,
    "response_time_ms": _r.c.response_time_ms,
    "play_counts": _r.c.play_counts,
    "client_info": _r.c.client_info,
    "answered_at": _r.c.created_at,
}

#: The columns of a judgment row. Experiment: ``experiment_id``, ``experiment`` (slug),
#: ``test_type``, ``audio_root`` (stimulus paths are relative to it). Participant:
#: ``participant_id``, ``platform``, ``worker_id``. Session: ``session_db_id`` (its row id),
#: ``session`` (public id), ``session_stage``, ``screening_passed``, ``assignment_id``,
#: ``hit_id``, ``study_id``, ``session_client_info`` (JSON). Trial: ``trial_id``,
#: ``trial_index``, ``kind``, ``track_id``, ``family``, ``level`` (0-100), ``a_is_reference``,
#: ``expected_answer``, ``trial_spec`` (JSON), ``served_at``, ``reference_stimulus_id`` and
#: ``test_stimulus_id`` (row ids); the reference stimulus' ``reference`` (its stimulus_id)
#: and ``reference_path``; the test stimulus' ``test_stimulus``, ``test_path`` and
#: ``params`` (JSON). Response: ``answer``, ``is_correct``, ``response_time_ms``,
#: ``play_counts`` (JSON list, per clip in slot order), ``client_info`` (JSON),
#: ``answered_at``. Times are datetimes in UTC (naive on SQLite); stimulus columns are
#: None for trials without that stimulus.
JUDGMENT_COLUMNS = tuple(_COLUMNS)


def judgments_select(
    *, experiment_id: int | None = None, test_type: str | None = None, kinds: Sequence[str] | None = None
) -> Select:
    """The judgments query (``JUDGMENT_COLUMNS``), one row per answered trial, ordered by
    experiment id, session id and trial index; narrowed to one experiment, one test type
    (``same_different`` | ``ab_preference``) and/or trial kinds when given."""
    query = (
        select(*(column.label(label) for label, column in _COLUMNS.items()))
        .select_from(_r)
        .join(_t, _t.c.id == _r.c.trial_id)
        .join(_s, _s.c.id == _t.c.session_id)
        .join(_p, _p.c.id == _s.c.participant_id)
        .join(_e, _e.c.id == _s.c.experiment_id)
        .outerjoin(_ref, _ref.c.id == _t.c.reference_stimulus_id)
        .outerjoin(_test, _test.c.id == _t.c.test_stimulus_id)
        .order_by(_e.c.id, _s.c.id, _t.c.trial_index)
    )
    if experiment_id is not None:
        query = query.where(_e.c.id == experiment_id)
    if test_type is not None:
        query = query.where(_e.c.test_type == test_type)
    if kinds is not None:
        query = query.where(_t.c.kind.in_(list(kinds)))
    return query


def iter_judgments(
    conn: Connection,
    *,
    experiment_id: int | None = None,
    test_type: str | None = None,
    kinds: Sequence[str] | None = None,
    batch_rows: int = 500,
) -> Iterator[RowMapping]:
    """Stream the judgments on an open connection, ``batch_rows`` rows fetched at a time
    (a large study never sits in memory at once). Rows are mappings keyed by
    ``JUDGMENT_COLUMNS``; filters as ``judgments_select``."""
    query = judgments_select(experiment_id=experiment_id, test_type=test_type, kinds=kinds)
    yield from conn.execute(query.execution_options(yield_per=batch_rows)).mappings()


def judgment_rows(
    source: Source,
    *,
    experiment_id: int | None = None,
    test_type: str | None = None,
    kinds: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The judgments of ``source`` as a list of dicts keyed by ``JUDGMENT_COLUMNS``.

    Raises:
        JudgmentsError: a URL source that ``open_database`` refuses.
    """
    with read_only(source) as conn:
        return [
            dict(row) for row in iter_judgments(conn, experiment_id=experiment_id, test_type=test_type, kinds=kinds)
        ]


def judgments_frame(
    source: Source,
    *,
    experiment_id: int | None = None,
    test_type: str | None = None,
    kinds: Sequence[str] | None = None,
) -> pd.DataFrame:
    """``judgment_rows`` as a pandas DataFrame with the columns ``JUDGMENT_COLUMNS`` (raw
    values: JSON columns as Python objects; ``analysis.judgments`` builds the tidy table).

    Raises:
        JudgmentsError: a URL source that ``open_database`` refuses.
    """
    import pandas as pd

    rows = judgment_rows(source, experiment_id=experiment_id, test_type=test_type, kinds=kinds)
    return pd.DataFrame.from_records(rows, columns=list(JUDGMENT_COLUMNS))


def experiments(source: Source) -> list[dict[str, Any]]:
    """Every experiment as ``{"id", "slug", "test_type", "audio_root"}``, by id."""
    query = select(_e.c.id, _e.c.slug, _e.c.test_type, _e.c.audio_root).order_by(_e.c.id)
    with read_only(source) as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def screening_rows(source: Source, *, experiment_id: int | None = None) -> list[dict[str, Any]]:
    """Headphone-screen results as ``{"session_id", "test", "n_trials", "n_correct", "passed"}``
    (``session_id``: the session's row id, ``session_db_id`` of a judgment row), ordered by
    session and test; of one experiment's sessions when ``experiment_id`` is given."""
    results = schema.screening_results
    query = select(
        results.c.session_id, results.c.test, results.c.n_trials, results.c.n_correct, results.c.passed
    ).order_by(results.c.session_id, results.c.test)
    if experiment_id is not None:
        query = query.join(_s, _s.c.id == results.c.session_id).where(_s.c.experiment_id == experiment_id)
    with read_only(source) as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def stimulus_ids(source: Source, experiment_id: int) -> dict[int, str]:
    """Row id -> ``stimulus_id`` (the manifest's key) of one experiment's stimuli."""
    stimuli = schema.stimuli
    query = select(stimuli.c.id, stimuli.c.stimulus_id).where(stimuli.c.experiment_id == experiment_id)
    with read_only(source) as conn:
        return {row.id: row.stimulus_id for row in conn.execute(query)}
