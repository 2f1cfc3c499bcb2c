"""Issue 14, runtime faults found by the reviewer (notes: breaker14 findings 5, 7, 9, 12, 13, 14):
each test covers a kind, on SQLite and PostgreSQL where a database is involved."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from listening_test.db import db, write_queue
from listening_test.models import Trial
from tests.listening_test.lt_helpers import ADMIN_TOKEN, Participant, wait_for
from tests.listening_test.test_integrity import make  # noqa: F401 - the parametrized app fixture

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# one-rung steps: valid on the small test ladder whatever the defaults
PROCEDURE = {"max_trials": 12, "max_reversals": None, "steps": [1], "shrink_at": [], "estimate_reversals": 2}


def _fetch(client, url, token):
    return client.get(url, headers={"X-Session-Token": token})


def _copied_set(tmp_path: Path, manifest_path: Path) -> Path:
    folder = tmp_path / "set"
    shutil.copytree(manifest_path.parent, folder)
    return folder / manifest_path.name


def _main_trial_file(make, tmp_path, manifest_path):  # noqa: F811
    manifest = _copied_set(tmp_path, manifest_path)
    app = make(manifest=manifest, procedure_config=PROCEDURE)
    p = Participant(app, app.test_client())
    p.land()
    p.to_stage("main")
    trial = p.state["trial"]
    with app.app_context():
        victim = manifest.parent / db.session.get(Trial, trial["id"]).test_stimulus.path
    return app, p, trial, victim


# --- 5: a file changed after creation is a clip fault -------------------------------------


@pytest.mark.parametrize("change", ["truncated", "resampled", "longer"])
def test_changed_file_is_a_clip_fault_not_delivered(make, tmp_path, manifest_path, change):  # noqa: F811
    _app, p, trial, victim = _main_trial_file(make, tmp_path, manifest_path)
    body = {"trial_id": trial["id"], "nonce": trial["nonce"]}
    assert p.post("/api/session/clip-fault", body).status_code == 409  # intact: clips_ok
    audio, rate = sf.read(victim, dtype="float64")
    if change == "truncated":
        victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])  # the header still decodes
    elif change == "resampled":
        sf.write(victim, audio, rate // 2)
    else:
        sf.write(victim, np.concatenate([audio, audio[:100]]), rate)
    codes = [_fetch(p.client, c["url"], p.token).status_code for c in trial["clips"]]
    assert 410 in codes and set(codes) <= {200, 410}
    r = p.post("/api/session/clip-fault", body)
    assert r.status_code == 200 and r.get_json()["voided"] is True
    reason = r.get_json()["reason"]
    assert str(victim) in reason and ("samples" in reason or "Hz" in reason)


# --- 7: admin logins: the token always works, a burst cannot pass the limit -------------------


def _admin_app(make, limit="3 per minute"):  # noqa: F811
    from werkzeug.security import generate_password_hash

    app = make(procedure_config=PROCEDURE)
    app.config.update(
        ADMIN_FAILED_LOGIN_LIMIT=limit, ADMIN_PASSWORD_HASH=generate_password_hash("right", method="pbkdf2:sha256:1000")
    )
    return app


def test_right_token_is_accepted_from_a_locked_out_address(make):  # noqa: F811
    app = _admin_app(make)
    client = app.test_client()
    codes = [client.get("/admin/api/experiments", auth=("admin", "wrong")).status_code for _ in range(6)]
    codes += [client.get("/admin/api/experiments", headers={"Authorization": "Bearer nope"}).status_code]
    assert codes == [403] * 3 + [429] * 4
    locked = client.get("/admin/api/experiments", auth=("admin", "right"))
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1  # a password needs a hash
    assert client.get("/admin/api/experiments", headers=ADMIN).status_code == 200


def test_a_burst_of_wrong_logins_computes_no_more_hashes_than_the_limit(make, monkeypatch):  # noqa: F811
    from listening_test.web import admin

    app = _admin_app(make, limit="5 per minute")
    calls, real = [], admin.check_password_hash

    def slow(h, pw):
        calls.append(pw)
        time.sleep(0.05)  # a slow hash keeps the burst's requests overlapping
        return real(h, pw)

    monkeypatch.setattr(admin, "check_password_hash", slow)
    codes: list[int] = []
    start = threading.Barrier(30)

    def attempt():
        client = app.test_client()
        start.wait()
        codes.append(client.get("/admin/api/experiments", auth=("admin", "wrong")).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 5 and sorted(codes) == [403] * 5 + [429] * 25
    # a right password from another address resets nothing of this one's, and works
    other = app.test_client().get(
        "/admin/api/experiments", auth=("admin", "right"), environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert other.status_code == 200


# --- 9: bounded waits: a held write lock gives a retryable 503, never a hang -----------------


def test_held_sqlite_writelock_gives_503_within_the_busy_timeout(tmp_path, template_db, manifest_path, monkeypatch):
    import fcntl
    import os

    import listening_test.db as dbmod
    from tests.listening_test.test_integrity import _make

    monkeypatch.setattr(dbmod, "SQLITE_BUSY_TIMEOUT_MS", 500)  # the write queue's wait, read at engine setup
    app = _make("sqlite", tmp_path, template_db, manifest_path, None, procedure_config=PROCEDURE)
    p = Participant(app, app.test_client())
    p.land()
    p.to_stage("main")
    body = p.answer_body()
    # another jndlab process (gunicorn worker, CLI) holds the cross-process write queue
    fd = os.open(f"{tmp_path / 'jndlab.sqlite'}-writelock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        for _ in range(2):  # the second finds the first's abandoned wait still pending: bounded too
            began = time.monotonic()
            r = p.post("/api/session/answer", body)
            assert time.monotonic() - began < 5
            assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
            assert r.get_json()["error"]["code"] == "database_busy"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    # The abandoned wait takes the flock, lets it go, and frees the queue: wait for its thread
    # to end (a fixed 0.2 s could be too short on a loaded machine; a wait that never ends fails).
    import threading

    assert wait_for(lambda: not any(t.name == "jndlab-writelock-wait" for t in threading.enumerate())), (
        "the abandoned wait hangs"
    )
    assert p.post("/api/session/answer", body).status_code == 200  # the retry goes through, once
    with app.app_context():
        assert db.session.get(Trial, body["trial_id"]).answered
        db.engine.dispose()


@pytest.mark.postgres
def test_held_postgres_lock_gives_503_not_a_hang(pg_schema, tmp_path, template_db, manifest_path, monkeypatch):
    import psycopg

    import listening_test.db as dbmod
    from tests.conftest import PG_URL
    from tests.listening_test.test_integrity import _make

    monkeypatch.setattr(dbmod, "PG_LOCK_TIMEOUT_MS", 500)
    app = _make("postgres", tmp_path, template_db, manifest_path, lambda: pg_schema, procedure_config=PROCEDURE)
    try:
        p = Participant(app, app.test_client())
        p.land()
        p.to_stage("main")
        body = p.answer_body()
        url = PG_URL.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
        for table in ("responses", "sessions"):
            with psycopg.connect(url) as holder:
                holder.execute(f'SET search_path TO "{pg_schema}"')
                holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                began = time.monotonic()
                r = p.post("/api/session/answer", body)
                assert time.monotonic() - began < 5
                holder.rollback()
            assert r.status_code == 503 and r.get_json()["error"]["code"] == "database_busy", r.get_json()
            assert r.headers["Retry-After"].isdigit()
        assert p.post("/api/session/answer", body).status_code == 200
        with app.app_context():
            from sqlalchemy import text

            assert db.session.execute(text("SHOW lock_timeout")).scalar() == "500ms"
            assert db.session.execute(text("SHOW statement_timeout")).scalar() == "1min"
    finally:
        with app.app_context():
            db.engine.dispose()


def test_length_estimates_run_outside_the_write_transaction(tmp_path, template_db, manifest_path, monkeypatch):
    from listening_test import estimates
    from listening_test.models import Experiment
    from tests.listening_test.test_integrity import _make

    app = _make("sqlite", tmp_path, template_db, manifest_path, None, procedure_config=PROCEDURE)
    seen = []
    real = estimates.study_estimate

    def watched(*args, **kwargs):
        seen.append((write_queue(db.engine).held, db.session().in_transaction()))
        return real(*args, **kwargs)

    monkeypatch.setattr(estimates, "study_estimate", watched)
    from listening_test.manifest_import import create_experiment
    from listening_test.platforms.recruitment import prepare_new_experiment

    with app.app_context():
        e = create_experiment(
            db.session, manifest_path, procedure="staircase", name="second", procedure_config=PROCEDURE
        )
        prepare_new_experiment(db.session, e)
        db.session.commit()
        stored = db.session.get(Experiment, e.id).estimate
        assert seen == [(False, False)] and stored["main_trials"]["mean"] > 0
        eid = e.id
        seen.clear()
        assert estimates.estimate_for_experiment(db.session, e) == stored  # as from the stored rows
        db.session.execute(db.update(Experiment).where(Experiment.id == eid).values(estimate=None))
        db.session.commit()
        db.session.expire_all()
    seen.clear()
    assert app.test_client().get("/e/second").status_code == 200  # the participant page computes a missing one
    assert seen == [(False, False)]
    with app.app_context():
        assert db.session.scalar(db.select(Experiment.estimate).where(Experiment.id == eid)) == stored
        db.engine.dispose()


# --- 12: ids beyond the columns' range: the unknown id's 404, on both databases ---------------


@pytest.mark.parametrize("big", [2**31, 2**40, 2**63 - 1])
def test_out_of_range_ids_are_unknown_ids_on_both_databases(make, big):  # noqa: F811
    app = make(procedure_config=PROCEDURE)
    p = Participant(app, app.test_client())
    p.land()
    p.to_stage("main")
    headers = {"X-Session-Token": p.token}
    for url_id in (big, 2**63, 10**30):
        r = p.client.get(f"/e/demo/screening/{url_id}/played", headers=headers)
        assert r.status_code == 404, (url_id, r.status_code)
    trial = p.state["trial"]
    for path, body in (("/api/session/answer", p.answer_body()), ("/api/session/clip-fault", dict(trial))):
        body = {**body, "trial_id": big} if path.endswith("answer") else {"trial_id": big, "nonce": trial["nonce"]}
        r = p.post(path, body)
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "trial_not_found", (path, r.get_json())
    r = p.post("/api/session/answer", {**p.answer_body(), "trial_id": 2**63})  # no JSON integer column holds it
    assert r.status_code == 422 and "trial_id" in r.get_json()["error"]["fields"]
    assert p.post("/api/session/answer", p.answer_body()).status_code == 200  # the session is unharmed


# --- 13: a worker ID's case variants are one participant ----------------------------------------


def test_worker_id_case_variants_are_one_participant(make):  # noqa: F811
    from listening_test.models import Participant as ParticipantRow
    from listening_test.platforms.identity import normalize_worker_id

    assert normalize_worker_id("mturk", "a1b2C3") == "A1B2C3"
    assert normalize_worker_id("prolific", "5F0A1B2C3D4E5F6A7B8C9D0E") == "5f0a1b2c3d4e5f6a7b8c9d0e"
    assert normalize_worker_id("link", "link-AbC") == "link-AbC"
    app = make(procedure_config=PROCEDURE)
    for worker in ("W2A", "w2a", "W2a"):
        p = Participant(
            app,
            app.test_client(),
            {"workerId": worker, "assignmentId": "A1", "hitId": "H1", "turkSubmitTo": "https://www.mturk.com"},
        )
        p.land()
    pid = "5f0a1b2c3d4e5f6a7b8c9d0e"
    for variant in (pid, pid.upper(), pid[:12] + pid[12:].upper()):
        q = Participant(app, app.test_client(), {"PROLIFIC_PID": variant, "STUDY_ID": "S1", "SESSION_ID": "X1"})
        q.land()
    with app.app_context():
        rows = db.session.query(ParticipantRow.platform, ParticipantRow.platform_worker_id).all()
        assert sorted(rows) == [("mturk", "W2A"), ("prolific", pid)]
        from listening_test.models import Session

        assert db.session.query(Session).count() == 2  # each variant resumed the one session
    for key in ("mturk:w2a", "mturk:W2A", f"prolific:{pid.upper()}"):
        r = app.test_client().get(f"/admin/api/experiments/demo/workers/{key}", headers=ADMIN)
        assert r.status_code == 200, (key, r.get_json())


# --- 14: the page's answer retries wait what API.md says ---------------------------------------


@pytest.mark.parametrize("retry_after_s", [2, 120])
def test_answer_backoff_waits_at_most_the_documented_cap(retry_after_s):
    import json
    import re
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    root = Path(__file__).resolve().parents[2] / "listening_test"
    page = (root / "static" / "participant.js").read_text()
    doc = (root / "API.md").read_text()
    cap_s = int(re.search(r"capped at (\d+) s a wait", doc).group(1))
    tries = int(re.search(r"after (\d+) tries", doc).group(1))
    start = page.index("  var ANSWER_RETRY_LIMIT")
    end = page.index("  // --- clips the server cannot deliver")
    script = """
var waits = [], tries = 0;
function setStatus() {}
function setTimeout(fn, ms) { waits.push(ms / 1000); fn(); }
Math.random = function () { return 0.999999; };  // the largest jitter
function request() { tries += 1; return Promise.resolve(
  {status: 503, data: {error: {retry_after_s: RETRY_AFTER_S}}}); }
PAGE_CODE
postAnswerWithBackoff({}).then(null, function (e) {
  console.log(JSON.stringify({waits: waits, tries: tries, message: e.participantMessage}));
});
""".replace("RETRY_AFTER_S", str(retry_after_s)).replace("PAGE_CODE", page[start:end])
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    result = json.loads(out.stdout)
    assert result["tries"] == tries and len(result["waits"]) == tries - 1
    assert max(result["waits"]) <= cap_s and max(result["waits"]) > cap_s - 1  # the cap is reached, not exceeded
    assert "could not be saved" in result["message"]


# --- 4: a faulty stimulus leaves rotation for the whole experiment ----------------------------

FAULT_FLOW = {
    "references_per_participant": 1,
    "families_per_participant": 2,
    "catch_rate": 0.25,
    "practice_trials": 2,
    "screening": {"tests": []},
}


def _drive(p: Participant) -> dict:
    """Run a participant to the end like the page: a clip answered 410 -> clip-fault."""
    voided = answered = 0
    for _ in range(400):
        stage = p.state["stage"]
        if stage in ("complete", "screened_out"):
            return {"voided": voided, "answered": answered}
        if stage == "consent":
            assert p.post("/api/session/consent", {"consent": True}).status_code == 200
        elif stage in ("volume", "instructions"):
            assert p.post(f"/api/session/{stage}").status_code == 200
        else:
            t = p.state["trial"]
            if any(_fetch(p.client, c["url"], p.token).status_code == 410 for c in t["clips"]):
                r = p.post("/api/session/clip-fault", {"trial_id": t["id"], "nonce": t["nonce"]})
                assert r.status_code == 200, r.get_json()
                voided += 1
            else:
                p.answer(p.expected(t["id"]) or (t.get("choices") or ["different"])[-1])
                answered += 1
    raise AssertionError("the session did not end")


@pytest.mark.parametrize("broken", ["rung", "reference"])
def test_faulty_stimulus_leaves_rotation_and_sessions_go_on(make, tmp_path, manifest_path, broken):  # noqa: F811
    from sqlalchemy import select

    from listening_test.models import Stimulus

    manifest = _copied_set(tmp_path, manifest_path)
    app = make(manifest=manifest, procedure_config=PROCEDURE, flow=FAULT_FLOW)
    first = Participant(app, app.test_client())
    first.land()
    first.to_stage("main")
    for _ in range(20):  # an identical-pair catch shows the reference twice: on to a trial with a rung
        with app.app_context():
            if db.session.get(Trial, first.state["trial"]["id"]).test_stimulus.family != "reference":
                break
        first.answer()
    trial = first.state["trial"]
    with app.app_context():
        row = db.session.get(Trial, trial["id"])
        victim = row.test_stimulus if broken == "rung" else row.reference_stimulus
        victim_id, victim_path = victim.id, manifest.parent / victim.path
    victim_path.unlink()
    run = _drive(first)
    assert run["voided"] == 1  # one void takes it out of rotation: never served again
    if broken == "rung":
        assert run["answered"] > 0  # the session went on with its healthy track
    others = [
        Participant(
            app,
            app.test_client(),
            {"workerId": f"W{i}9", "assignmentId": f"A{i}", "hitId": "H1", "turkSubmitTo": "https://www.mturk.com"},
        )
        for i in range(3)
    ]
    for p in others:
        p.land()
        result = _drive(p)
        assert result == {"voided": 0, "answered": result["answered"]} and result["answered"] > 0
    with app.app_context():
        fault = db.session.get(Stimulus, victim_id)
        assert str(victim_path) in fault.fault_reason and fault.fault_at is not None
        served_after = db.session.scalar(
            select(db.func.count())
            .select_from(Trial)
            .where(
                Trial.id > trial["id"],
                (Trial.test_stimulus_id == victim_id) | (Trial.reference_stimulus_id == victim_id),
            )
        )
        assert served_after == 0  # no trial of any session used it again (catch, practice, main)
        sessions = db.session.scalars(select(db.text("stage FROM sessions"))).all()
        assert sessions == ["complete"] * 4
    stats = app.test_client().get("/admin/api/experiments/demo/stats", headers=ADMIN).get_json()
    faulty = stats["faulty_stimuli"]
    assert faulty["count"] == 1 and str(victim_path) in faulty["stimuli"][0]["reason"]
    ended = faulty["sessions_ended_by_faults"]
    if broken == "reference":  # its one reference gone: nothing healthy left, said so
        assert len(ended) == 1 and "no healthy track left" in ended[0]["reason"]


def test_faulty_ab_anchor_leaves_rotation(tmp_path, template_db):
    from sqlalchemy import select

    from listening_test.manifest_import import create_experiment
    from listening_test.models import Stimulus
    from tests.listening_test.lt_helpers import make_app, write_ab_set

    manifest = write_ab_set(tmp_path / "ab", n_items=4)
    path = tmp_path / "ab.sqlite"
    shutil.copy(template_db, path)
    app = make_app(f"sqlite:///{path}")
    flow = {
        "references_per_participant": 1,
        "catch_rate": 0.4,
        "practice_trials": 2,
        "anchor_system": "noisy",
        "screening": {"tests": []},
    }
    with app.app_context():
        create_experiment(
            db.session, manifest, name="demo", test_type="ab_preference", config=flow, procedure_config={"repeats": 2}
        )
        db.session.commit()
    first = Participant(app, app.test_client())
    first.land()
    first.to_stage("practice")
    trial = first.state["trial"]
    with app.app_context():
        anchor_ids = db.session.get(Trial, trial["id"]).spec["stimuli"]
        anchor = next(
            s for s in db.session.scalars(select(Stimulus).where(Stimulus.id.in_(anchor_ids))) if s.family == "noisy"
        )
        anchor_id, anchor_path = anchor.id, manifest.parent / anchor.path
    anchor_path.unlink()
    run = _drive(first)
    assert run["voided"] <= 2  # the practice trials at most (its only item has no healthy anchor)
    for i in range(3):
        p = Participant(
            app,
            app.test_client(),
            {"workerId": f"WAB{i}", "assignmentId": f"A{i}", "hitId": "H1", "turkSubmitTo": "https://www.mturk.com"},
        )
        p.land()
        result = _drive(p)
        assert result["voided"] == 0 and result["answered"] > 0  # other items: catches and practice go on
    with app.app_context():
        assert str(anchor_path) in db.session.get(Stimulus, anchor_id).fault_reason
        later = [
            t
            for t in db.session.scalars(select(Trial).where(Trial.id > trial["id"]))
            if anchor_id in (t.spec or {}).get("stimuli", []) and t.voided_reason is None
        ]
        assert not later  # never served again where it could be answered
        db.engine.dispose()
