"""Helpers for the listening-test tests (a unique module name: other test folders
have conftest.py files too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
from sqlalchemy import select

from listening_test import create_app
from listening_test.db import db
from listening_test.local_server import local_server
from listening_test.models import Trial
from tests.conftest import PG_URL  # noqa: F401 - re-exported: the listening-test tests import it from here
from tests.manifests import ManifestWriter

SR = 16000
REFERENCES = ("ref_a", "ref_b")
FAMILIES = ("noise", "mp3")
LEVELS = (10.0, 40.0, 70.0, 100.0)
ADMIN_TOKEN = "test-admin-token-0123456789"
TABLES = (
    "experiments",
    "stimuli",
    "participants",
    "sessions",
    "tracks",
    "trials",
    "audio_tokens",
    "responses",
    "screening_results",
)

# Playwright drives Debian's Chromium (never `playwright install`: nothing is downloaded at run time).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "e2e"  # screenshots
TIMEOUT_MS = 20_000

FLOW_CONFIG = {
    "references_per_participant": 1,
    "families_per_participant": 2,
    "catch_rate": 0.2,
    "practice_trials": 2,
    "screening": {"tests": ["huggins", "antiphase"], "trials_per_test": 2, "min_correct": 2},
}
PROCEDURE_CONFIG = {"max_trials": 4, "max_reversals": None}
# The simulated crowds' flow: no headphone check, one practice trial.
CROWD_FLOW = {
    "references_per_participant": 1,
    "families_per_participant": 2,
    "catch_rate": 0.2,
    "practice_trials": 1,
    "screening": {"tests": []},
}


def write_stimulus_set(folder: Path) -> Path:
    """Two references, two families, four levels; 0.1 s clips. Returns the manifest path."""
    rng = np.random.default_rng(0)
    out = ManifestWriter(folder, SR)
    for ref in REFERENCES:
        clean = 0.1 * rng.standard_normal(SR // 10)
        out.add(ref, ref, "reference", 0, clean, {"snr_db": 40.0})
        for family in FAMILIES:
            for level in LEVELS:
                out.add(
                    f"{ref}_{family}_{int(level)}",
                    ref,
                    family,
                    level,
                    clean + level / 1000 * rng.standard_normal(len(clean)),
                    {"snr_db": 40 - level / 4},
                )
    return out.write()


def make_app(database_url: str, **overrides):
    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "SECRET_KEY": "test-secret-key-0123456789",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            **overrides,
        }
    )


# --- helpers shared by the route tests ---------------------------------------------


def pg_app(schema: str, **overrides):
    """An app on the shared PostgreSQL server, confined to ``schema`` via search_path."""
    return make_app(
        PG_URL,
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": f"-csearch_path={schema}"}, "pool_size": 10},
        **overrides,
    )


def row_counts(app) -> dict[str, int]:
    with app.app_context():
        return {t: db.session.execute(db.text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in TABLES}  # noqa: S608 - fixed table names


def db_snapshot(app) -> dict:
    """Row counts plus the mutable session fields: 'the database is unchanged' means this is equal."""
    with app.app_context():
        sessions = db.session.execute(
            db.text("SELECT id, stage, n_trials, completion_code FROM sessions ORDER BY id")
        ).all()
        tracks = db.session.execute(db.text("SELECT id, n_trials, finished FROM tracks ORDER BY id")).all()
        answered = db.session.execute(db.text("SELECT COUNT(*) FROM trials WHERE answered")).scalar_one()
    return {
        "counts": row_counts(app),
        "sessions": [tuple(r) for r in sessions],
        "tracks": [tuple(r) for r in tracks],
        "answered": answered,
    }


class Participant:
    """A scripted participant driving the JSON API like the front end does."""

    def __init__(self, app, client, params=None):
        self.app, self.client = app, client
        self.params = (
            params
            if params is not None
            else {"workerId": "W1", "assignmentId": "A1", "hitId": "H1", "turkSubmitTo": "https://www.mturk.com"}
        )
        self.csrf = None
        self.state = None

    def land(self, expect=(200, 201)):
        r = self.client.post("/api/experiments/demo/sessions", json={"params": self.params})
        assert r.status_code in expect, r.get_json()
        body = r.get_json()
        if not body.get("preview"):
            self.csrf, self.state = body["csrf_token"], body["state"]
            self.token = body["session_token"]
        return r

    def post(self, path, body=None, csrf=True):
        headers = {"X-CSRF-Token": self.csrf} if csrf else {}
        r = self.client.post(path, json=body if body is not None else {}, headers=headers)
        if r.status_code == 200 and "state" in r.get_json():
            self.state = r.get_json()["state"]
        return r

    def expected(self, trial_id: int) -> str:
        with self.app.app_context():
            return db.session.scalar(select(Trial.expected_answer).where(Trial.id == trial_id))

    def answer_body(self, answer=None, trial=None):
        trial = trial or self.state["trial"]
        answer = answer or self.expected(trial["id"]) or "different"
        return {
            "trial_id": trial["id"],
            "nonce": trial["nonce"],
            "answer": answer,
            "response_time_ms": 900,
            "play_counts": [1] * len(trial["clips"]),
            "client": {"screen": "1280x800"},
        }

    def answer(self, answer=None):
        r = self.post("/api/session/answer", self.answer_body(answer))
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    def to_stage(self, stage: str):
        """Walk forward (answering correctly) until the session is at ``stage``."""
        for _ in range(500):
            current = self.state["stage"]
            if current == stage:
                return
            if current == "consent":
                assert self.post("/api/session/consent", {"consent": True}).status_code == 200
            elif current in ("volume", "instructions"):
                assert self.post(f"/api/session/{current}").status_code == 200
            elif current in ("screening", "practice", "main"):
                self.answer()
            else:
                raise AssertionError(f"cannot reach {stage} from {current}")
        raise AssertionError("flow did not terminate")


def live_server(app, **kwargs):
    """Serve ``app`` from a thread on a free 127.0.0.1 port; yields the base URL, stops at exit
    (``kwargs``: ``local_server``'s, e.g. ``landing_rate_limit``)."""
    return local_server(app, **kwargs)


# --- A/B preference sets ------------------------------------------------------------

AB_SYSTEMS = {"good": 30.0, "bad": 6.0}  # system name -> SNR (dB) of the noise it leaves in
AB_ANCHOR_SNR_DB = 0.0


def write_ab_folders(folder: Path, n_items: int = 4, seconds: float = 0.6) -> dict[str, Path]:
    """Clean clips (harmonic tones in speech-like bursts) and three 'systems' that leave white
    noise at known SNRs: good (30 dB), bad (6 dB) and the anchor noisy (0 dB).
    Returns {"clean": ..., "good": ..., "bad": ..., "noisy": ...} folders."""
    rng = np.random.default_rng(7)
    t = np.arange(int(SR * seconds)) / SR
    folders = {name: folder / name for name in ("clean", *AB_SYSTEMS, "noisy")}
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    snrs = {**AB_SYSTEMS, "noisy": AB_ANCHOR_SNR_DB}
    for i in range(n_items):
        f0 = 120.0 + 25.0 * i
        clean = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
        clean *= 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2  # syllable-rate envelope
        clean = (0.1 * clean / np.sqrt(np.mean(clean**2))).astype(np.float32)
        name = f"utt{i:02d}.wav"
        sf.write(folders["clean"] / name, clean, SR, subtype="FLOAT")
        for system, snr_db in snrs.items():
            noise = rng.standard_normal(len(clean))
            noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
            sf.write(folders[system] / name, (clean + noise).astype(np.float32), SR, subtype="FLOAT")
    return folders


def write_ab_set(folder: Path, n_items: int = 4) -> Path:
    """An A/B stimulus set (perturbations.ab_set) of ``write_ab_folders``; returns its manifest."""
    from perturbations.ab_set import build_ab_set

    f = write_ab_folders(folder / "systems", n_items)
    summary = build_ab_set(
        f["clean"], {"good": f["good"], "bad": f["bad"]}, folder / "set", anchor=("noisy", f["noisy"])
    )
    return summary.manifest


AB_FLOW_CONFIG = {
    "references_per_participant": 3,
    "catch_rate": 0.25,
    "practice_trials": 2,
    "anchor_system": "noisy",
    "screening": {"tests": ["huggins", "antiphase"], "trials_per_test": 2, "min_correct": 2},
}


# --- browser tests: the database as the page leaves it --------------------------------


def open_trial(app) -> Trial:
    """The newest unanswered trial."""
    with app.app_context():
        return db.session.scalar(select(Trial).where(Trial.answered.is_(False)).order_by(Trial.id.desc()))


def row_counts_of_trials(app) -> tuple[int, int, int]:
    """(trials, answered trials, responses)."""
    from sqlalchemy import func

    from listening_test.models import Response

    with app.app_context():
        trials = db.session.scalar(select(func.count(Trial.id)))
        answered = db.session.scalar(select(func.count(Trial.id)).where(Trial.answered.is_(True)))
        responses = db.session.scalar(select(func.count(Response.id)))
    return trials, answered, responses


def wait_for(predicate, timeout_s: float = 10.0, poll_s: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` passes; its last value. A bounded
    wait for background work (threads, servers, pages), instead of a fixed sleep that a
    loaded machine can outlast."""
    import time

    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return bool(predicate())


def wait_answered(app, trial_id: int, timeout_s: float = 15.0) -> None:
    def answered() -> bool:
        with app.app_context():
            return bool(db.session.scalar(select(Trial.answered).where(Trial.id == trial_id)))

    if not wait_for(answered, timeout_s, poll_s=0.05):
        raise AssertionError(f"trial {trial_id} was not answered within {timeout_s}s")


# --- set-ups shared by several test files ---------------------------------------------


def seed_sessions_by_worker(monkeypatch) -> None:
    """New sessions take their seed from the landing's worker ID (``workerId`` or
    ``PROLIFIC_PID``) instead of ``secrets.randbits``, for tests that check statistics of a
    simulated crowd: the seed decides each session's catch-trial places and kinds, clip
    orders and headphone-check targets, so with the server's own random seeds such a test
    fails now and then by chance (a random clicker above 75 % of its catch trials, say).
    A worker ID, not the order of landings, which concurrent clients change from run to run."""
    import hashlib
    from types import SimpleNamespace

    from flask import request

    from listening_test.store import landing

    def randbits(k: int) -> int:
        params = (request.get_json(silent=True) or {}).get("params") or {}
        worker = str(params.get("workerId") or params.get("PROLIFIC_PID") or "")
        return int.from_bytes(hashlib.sha256(worker.encode()).digest()[:8], "big") >> (64 - k)

    monkeypatch.setattr(landing, "secrets", SimpleNamespace(randbits=randbits))


def add_demo_experiment(manifest: Path, procedure_config=PROCEDURE_CONFIG, config=FLOW_CONFIG, **fields):
    """In the current app context: the staircase experiment "demo" of ``manifest`` (``fields``:
    more ``create_experiment`` arguments), committed. Returns the Experiment."""
    from listening_test.manifest_import import create_experiment

    experiment = create_experiment(
        db.session,
        manifest,
        procedure="staircase",
        name="demo",
        procedure_config=procedure_config,
        config=config,
        **fields,
    )
    db.session.commit()
    return experiment


def template_copy_app(template_db: Path, path: Path, **overrides):
    """An app on a copy, at ``path``, of the migrated template SQLite database (conftest's ``template_db``)."""
    import shutil

    shutil.copy(template_db, path)
    return make_app(f"sqlite:///{path}", **overrides)


def upgrade_with_demo(app, manifest: Path, *args, **fields):
    """Migrates ``app``'s database (``alembic upgrade``) and adds ``add_demo_experiment(manifest,
    *args, **fields)`` to it. Returns ``app``."""
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()
        add_demo_experiment(manifest, *args, **fields)
    return app


def cli_create(runner, manifest, *options: str):
    """``experiment create --manifest MANIFEST OPTIONS...`` through a Flask CLI test runner;
    returns click's ``Result``."""
    return runner.invoke(args=["experiment", "create", "--manifest", str(manifest), *options])


def create_hits(runner, url: str, reward: str, assignments: str, *options: str):
    """``mturk create-hits --experiment demo --url URL --reward REWARD --assignments N OPTIONS...``
    through a Flask CLI test runner; returns click's ``Result``."""
    args = ["mturk", "create-hits", "--experiment", "demo", "--url", url, "--reward", reward]
    return runner.invoke(args=[*args, "--assignments", assignments, *options])


def participant_at(app, stage: str, client=None, params=None) -> Participant:
    """A Participant (on ``client``, by default a new test client) that has landed and walked,
    answering correctly, to ``stage``."""
    p = Participant(app, app.test_client() if client is None else client, params)
    p.land()
    p.to_stage(stage)
    return p


def expected_left_through_main(app, client) -> list:
    """A participant's ``progress.expected_left`` on each of its main trials (None where the
    server gives no figure), answering correctly."""
    p = participant_at(app, "main", client)
    seen = []
    while p.state["stage"] == "main":
        seen.append(p.state["progress"]["expected_left"])
        p.answer()
    return seen


class E2EPage:
    """A Chromium page for the end-to-end tests (1280x860 unless ``context_args`` say otherwise,
    ``TIMEOUT_MS``): the JavaScript errors it raised go to ``errors``; ``shot`` writes numbered
    screenshots ``ARTIFACTS/{prefix}NN-name.png`` and lists them in ``shots``."""

    def __init__(self, browser, prefix: str = "", accept_dialogs: bool = False, **context_args):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.shots: list[Path] = []
        self.context = browser.new_context(**{"viewport": {"width": 1280, "height": 860}, **context_args})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        if accept_dialogs:
            self.page.on("dialog", lambda dialog: dialog.accept())  # "leave the study?" on reload

    def shot(self, name: str, full_page: bool = True) -> None:
        path = ARTIFACTS / f"{self.prefix}{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        self.shots.append(path)

    def heading(self, screen: str):
        return self.page.locator(f"#screen-{screen} h1")

    def completion_code(self, app) -> str:
        """Waits for the completion screen; asserts the one session is complete with a code and
        the page shows that code. Returns it."""
        from playwright.sync_api import expect

        from listening_test.models import Session

        expect(self.heading("complete")).to_be_visible()
        with app.app_context():
            session = db.session.scalar(select(Session))
            code, stage = session.completion_code, session.stage
        assert stage == "complete" and code
        expect(self.page.locator("#completion-code")).to_have_text(code)
        return code

    def reload_on_trial(self, app, trial_id: int, number: int) -> None:
        """Reloads the page on trial ``trial_id`` (the page's trial ``number``); asserts the same
        trial comes back and nothing new is stored."""
        from playwright.sync_api import expect

        before = row_counts_of_trials(app)
        self.page.reload()
        expect(self.page.locator("#trial-number")).to_have_text(str(number))
        assert open_trial(app).id == trial_id and row_counts_of_trials(app) == before  # same trial, nothing new

    def print_shots(self) -> None:
        print(f"\nscreenshots ({len(self.shots)}): {ARTIFACTS}")
        for path in self.shots:
            print(f"  {path}")


def assert_every_trial_answered_once(app, answers: int) -> None:
    """``answers`` responses stored, one per trial, every served trial answered."""
    from sqlalchemy import func

    from listening_test.models import Response

    trials, answered, responses = row_counts_of_trials(app)
    assert responses == answers == answered == trials
    with app.app_context():
        per_trial = db.session.execute(select(Response.trial_id, func.count()).group_by(Response.trial_id)).all()
        assert all(n == 1 for _, n in per_trial)
