"""No answer lost, none duplicated, under concurrent requests, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from listening_test.db import db
from tests.listening_test.lt_helpers import Participant, participant_at, pg_app, row_counts, upgrade_with_demo

N_THREADS = 8


def _race_same_answer(app, p: Participant):
    body = p.answer_body(answer="same")
    headers = {"X-CSRF-Token": p.csrf, "X-Session-Token": p.token}

    def submit(_):
        # A client per thread: the test client's cookie jar is not thread-safe.
        r = app.test_client().post("/api/session/answer", json=body, headers=headers)
        return r.status_code, (r.get_json() or {}).get("duplicate")

    before = row_counts(app)
    with ThreadPoolExecutor(N_THREADS) as pool:
        results = list(pool.map(submit, range(N_THREADS)))
    after = row_counts(app)
    assert after["responses"] == before["responses"] + 1, results
    fresh = [r for r in results if r == (200, False)]
    assert len(fresh) == 1, results  # exactly one request recorded it
    assert all(code in (200, 409) for code, _ in results), results
    p.state = p.client.get("/api/session").get_json()["state"]  # the next trial


def _race_landing(app):
    params = {"workerId": "RACE", "assignmentId": "RA", "hitId": "H"}

    def land(_):
        return app.test_client().post("/api/experiments/demo/sessions", json={"params": params}).status_code

    before = row_counts(app)
    with ThreadPoolExecutor(N_THREADS) as pool:
        codes = list(pool.map(land, range(N_THREADS)))
    after = row_counts(app)
    assert sorted(set(codes)) in ([200, 201], [201]), codes
    assert codes.count(201) == 1
    assert after["participants"] == before["participants"] + 1
    assert after["sessions"] == before["sessions"] + 1


def test_sqlite_concurrent_duplicate_answers_and_landings(app, client):
    p = participant_at(app, "main", client)
    _race_same_answer(app, p)
    _race_landing(app)


@pytest.fixture
def pg(pg_schema, manifest_path):
    app = upgrade_with_demo(pg_app(pg_schema), manifest_path, prolific_completion_code="PROLIFIC123")
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.mark.postgres
def test_postgres_full_flow_and_races(pg):
    p = Participant(pg, pg.test_client())
    assert p.land().status_code == 201
    p.to_stage("main")
    _race_same_answer(pg, p)
    _race_landing(pg)
    p.to_stage("complete")
    counts = row_counts(pg)
    assert p.state["completion"]["code"]
    assert counts["responses"] == counts["trials"]
    with pg.app_context():
        unanswered = db.session.execute(
            db.text("SELECT COUNT(*) FROM trials t LEFT JOIN responses r ON r.trial_id = t.id WHERE r.id IS NULL")
        ).scalar_one()
        mismatched = db.session.execute(
            db.text(
                "SELECT COUNT(*) FROM trials t LEFT JOIN responses r ON r.trial_id = t.id "
                "WHERE (r.id IS NULL) = t.answered"
            )
        ).scalar_one()
    assert unanswered == 0  # the racing landing stopped at consent: no trial served
    assert mismatched == 0  # the answered flag and the response rows agree
