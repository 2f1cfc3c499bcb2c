"""The read-only judgments query layer: one query over the schema's Core tables, no Flask.

The database is built as the app builds it (Alembic upgrade, create_experiment) and filled
with known answers; the query's rows are checked against the tables read with plain SQL.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, insert, text
from sqlalchemy.exc import DBAPIError

from listening_test import schema
from listening_test.judgments_query import (
    JUDGMENT_COLUMNS,
    JudgmentsError,
    database_url,
    experiments,
    iter_judgments,
    judgment_rows,
    judgments_frame,
    open_database,
    read_only,
    screening_rows,
    stimulus_ids,
)
from tests.analysis.an_helpers import Worker, build_template_db, fill_judgments

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


def _add_ab_experiment(path: Path) -> None:
    """An A/B experiment with one answered screening trial (a trial without stimuli)."""
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        exp = conn.execute(
            insert(schema.experiments).values(
                slug="ab",
                name="ab",
                test_type="ab_preference",
                manifest_path="m.csv",
                audio_root="/nowhere",
                procedure="paired",
            )
        ).inserted_primary_key[0]
        pid = conn.execute(
            insert(schema.participants).values(experiment_id=exp, platform="link", platform_worker_id="zed")
        ).inserted_primary_key[0]
        sid = conn.execute(
            insert(schema.sessions).values(
                public_id="s-ab",
                experiment_id=exp,
                participant_id=pid,
                platform_session_key="link",
                seed=7,
                created_at=T0,
            )
        ).inserted_primary_key[0]
        tid = conn.execute(
            insert(schema.trials).values(
                session_id=sid,
                trial_index=0,
                kind="screening",
                spec={"test": "huggins", "target": 2},
                expected_answer="2",
                nonce="n-ab",
                answered=True,
                served_at=T0,
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(schema.responses).values(
                trial_id=tid,
                session_id=sid,
                trial_index=0,
                answer="2",
                is_correct=True,
                response_time_ms=900,
                play_counts=[1, 1, 1],
                created_at=T0,
            )
        )
        conn.execute(
            insert(schema.screening_results).values(
                session_id=sid, test="huggins", n_trials=1, n_correct=1, passed=True
            )
        )
    engine.dispose()


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("judgments_query")
    path = build_template_db(folder)
    fill_judgments(
        path,
        [
            Worker("good", reps=1, n_identical=2, n_obvious=2),
            Worker("deaf", kind="same", reps=1, n_identical=2, n_obvious=2, headphone_passed=False),
        ],
        np.random.default_rng(3),
    )
    _add_ab_experiment(path)
    return path


@pytest.fixture(scope="module")
def url(db_path) -> str:
    return f"sqlite:///{db_path}"


def test_importing_the_query_layer_imports_no_flask():
    code = (
        "import sys, analysis.judgments, listening_test.judgments_query, listening_test.schema; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'flask_sqlalchemy', "
        "'flask_migrate', 'werkzeug')); print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rows_are_every_answer_joined_as_the_tables_say(url, db_path):
    rows = judgment_rows(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        expected = conn.execute(
            text(
                "SELECT e.id, e.slug, p.platform_worker_id, s.public_id, t.trial_index, t.kind, t.level, "
                "ref.path, test.path, r.answer, r.response_time_ms "
                "FROM responses r JOIN trials t ON t.id = r.trial_id JOIN sessions s ON s.id = t.session_id "
                "JOIN participants p ON p.id = s.participant_id JOIN experiments e ON e.id = s.experiment_id "
                "LEFT JOIN stimuli ref ON ref.id = t.reference_stimulus_id "
                "LEFT JOIN stimuli test ON test.id = t.test_stimulus_id "
                "ORDER BY e.id, s.id, t.trial_index"
            )
        ).all()
        n_responses = conn.execute(text("SELECT count(*) FROM responses")).scalar_one()
    engine.dispose()
    assert len(rows) == n_responses == len(expected) == 2 * (2 * 2 * 10 + 2 * 4) + 1
    assert [
        tuple(
            r[k]
            for k in (
                "experiment_id",
                "experiment",
                "worker_id",
                "session",
                "trial_index",
                "kind",
                "level",
                "reference_path",
                "test_path",
                "answer",
                "response_time_ms",
            )
        )
        for r in rows
    ] == [tuple(e) for e in expected]
    assert all(tuple(r) == JUDGMENT_COLUMNS for r in rows)
    screening = [r for r in rows if r["kind"] == "screening"]
    assert len(screening) == 1 and screening[0]["reference_path"] is None and screening[0]["test_path"] is None
    assert screening[0]["test_type"] == "ab_preference" and screening[0]["trial_spec"]["target"] == 2
    assert screening[0]["play_counts"] == [1, 1, 1]


def test_filters(url):
    every = judgment_rows(url)
    demo = next(e for e in experiments(url) if e["slug"] == "demo")
    sd = judgment_rows(url, test_type="same_different")
    assert sd == judgment_rows(url, experiment_id=demo["id"]) == [r for r in every if r["experiment"] == "demo"]
    assert judgment_rows(url, test_type="ab_preference") == [r for r in every if r["experiment"] == "ab"]
    catch = judgment_rows(url, kinds=("catch_identical", "catch_obvious"))
    assert catch == [r for r in every if r["kind"].startswith("catch")] and len(catch) == 2 * 8
    assert judgment_rows(url, kinds=()) == []
    assert judgment_rows(url, experiment_id=10_000) == []


def test_sources_url_engine_and_connection_agree(url, db_path):
    by_url = judgment_rows(url)
    engine = create_engine(url)
    try:
        assert judgment_rows(engine) == by_url
        with engine.connect() as conn:
            assert judgment_rows(conn) == by_url
            assert [dict(r) for r in iter_judgments(conn, batch_rows=3)] == by_url  # streamed in small batches
            assert conn.in_transaction()  # the caller's connection and transaction are left as they were
    finally:
        engine.dispose()
    assert judgment_rows(database_url(db_path)) == by_url  # a plain path is a SQLite file


def test_frame_screening_stimuli_and_experiments(url):
    frame = judgments_frame(url, test_type="same_different")
    assert list(frame.columns) == list(JUDGMENT_COLUMNS) and len(frame) == 2 * (2 * 2 * 10 + 2 * 4)
    empty = judgments_frame(url, experiment_id=10_000)
    assert empty.empty and list(empty.columns) == list(JUDGMENT_COLUMNS)
    listed = experiments(url)
    assert [(e["slug"], e["test_type"]) for e in listed] == [("demo", "same_different"), ("ab", "ab_preference")]
    results = screening_rows(url)
    assert [(r["test"], r["passed"]) for r in results] == [("huggins", True), ("huggins", False), ("huggins", True)]
    assert screening_rows(url, experiment_id=listed[1]["id"]) == [results[-1]]
    ids = stimulus_ids(url, listed[0]["id"])
    assert len(ids) == 2 + 2 * 2 * 10 and "ref_a" in ids.values()
    assert stimulus_ids(url, listed[1]["id"]) == {}


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(JudgmentsError, match=r"no SQLite database file at .*missing\.sqlite"):
        judgment_rows(f"sqlite:///{tmp_path / 'missing.sqlite'}")
    assert not (tmp_path / "missing.sqlite").exists()  # and none was created
    blank = tmp_path / "blank.sqlite"
    engine = create_engine(f"sqlite:///{blank}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE experiments (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(JudgmentsError, match=r"not a jndlab listening-test database .*'responses'.*db upgrade"):
        open_database(f"sqlite:///{blank}")
    with pytest.raises(JudgmentsError, match="not a database URL"):
        judgment_rows("not a url://")
    with pytest.raises(
        JudgmentsError,
        match=r"^postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:1/x\?connect_timeout=2: "
        r"cannot connect",
    ) as caught:
        judgment_rows("postgresql+psycopg://u:secret@127.0.0.1:1/x?connect_timeout=2")
    assert "secret" not in str(caught.value)


@pytest.mark.postgres
def test_postgres_reads_in_a_read_only_transaction(db_path, pg_schema, tmp_path):
    """On PostgreSQL the reads run READ ONLY: a write in that transaction is refused."""
    from flask_migrate import upgrade

    from listening_test.db import db
    from tests.conftest import PG_URL
    from tests.listening_test.lt_helpers import pg_app

    app = pg_app(pg_schema)
    with app.app_context():
        upgrade()
        db.engine.dispose()
    engine = create_engine(PG_URL, connect_args={"options": f"-csearch_path={pg_schema}"})
    try:
        with engine.begin() as conn:  # one experiment, copied from the SQLite file
            sqlite = create_engine(f"sqlite:///{db_path}")
            with sqlite.connect() as source:
                for table in (schema.experiments, schema.stimuli):
                    rows = [dict(r) for r in source.execute(table.select()).mappings()]
                    conn.execute(insert(table), rows)
            sqlite.dispose()
        assert judgment_rows(engine) == []
        assert [e["slug"] for e in experiments(engine)] == ["demo", "ab"]
        with read_only(engine) as conn, pytest.raises(DBAPIError, match="read-only transaction"):
            conn.execute(text("DELETE FROM stimuli"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM stimuli")).scalar_one() == 2 + 2 * 2 * 10
        url = f"{PG_URL}?options=-csearch_path%3D{pg_schema}"  # a URL source: opened, checked, disposed
        assert [e["slug"] for e in experiments(url)] == ["demo", "ab"]
    finally:
        engine.dispose()
