"""Load benchmark for the listening-test server (issue 3).

N concurrent simulated participants talk HTTP to gunicorn (a subprocess on a free
127.0.0.1 port) serving ``listening_test:create_app()`` over a tiny generated
stimulus set, on SQLite (WAL) and on PostgreSQL (a throwaway schema on
127.0.0.1:5432, dropped afterwards).

Each participant lands (a unique Prolific ID), consents, passes the volume and
instructions steps (the benchmark experiment has screening and practice turned
off: ``"screening": {"tests": []}, "practice_trials": 0``; 2 references x 2
families = 4 tracks of ``--procedure``, default stop rules, catch rate 0.1), then loops:

    POST /api/session/answer  ->  [optionally GET both clips' /audio/<token>]
    ->  think time  ->  again

as the participant page does (``static/participant.js``): it GETs
``/api/session`` once, when the page loads, and then renders each answer's reply,
which carries the next trial. A *trial round trip* is therefore the POST (audio
excluded): what a participant waits for between pressing an answer and seeing the
next trial. ``--get-each-trial`` adds a GET /api/session before every answer (the
pattern this benchmark used before issue 18: a trial round trip is then the GET
plus the POST). When a session completes, the participant lands again as a new
one.

The floor, in the same run, under the same gunicorn configuration and the same
database: a bare Flask endpoint (``floor_app`` below) that does one INSERT and
commits, driven by as many clients with the same think time.

Interleaved rounds: both servers start (two gunicorns on two ports), the app's
participants land once, each target gets ``--warmup-s`` of unmeasured load, and then
``--rounds`` rounds follow, each giving the app and the floor ``--duration-s /
--rounds`` of load one after the other, in ABBA order (app first in even rounds, floor
first in odd ones). Only one target has load at a time: the other's clients wait at a
gate (participants keep their sessions across rounds; one whose session completes
lands again as a new participant, during an app phase), and a phase ends only when its
last request has returned. When a phase opens, each waiting client first sleeps a
random part of the think time, so that it does not open with a burst. So both targets
see the same stretch of a shared machine's life: a disk stall or another job lands in
both, or in one round of each, instead of in one target's whole window, as it did
when the app ran for the whole duration and then the floor.

Reading the table (one row per target): ``p50``/``p99`` are pooled over all rounds
(a trial counts in the round in which it started); ``p99 / floor p99`` is the
headline: the pooled app p99 over the pooled floor p99. ``round ratios`` gives the
median (min-max) over rounds of each round's app p99 / floor p99: a wide spread, or a
median far from the pooled ratio, says the machine was not quiet. The line under the
table lists each round's two p99s (ms), ``*`` marking the rounds the floor ran first;
``--json`` has them with their sample counts (``per_round``), and each phase's start,
end and drain times (``phases``). A round's p99 rests on about 1% of its samples,
i.e. on few at short rounds: the pooled ratio is the number, the rounds its spread.
``load avg (max)`` is the machine's 1-minute load average over the target's phases;
``client CPU`` / ``server CPU`` are cores used during them (``idle_peer_cpu_cores`` in
the JSON is the other server's, which should idle).

Integrity (must be zero): *lost* = answers the client got ``200 recorded`` for
that have no row in ``responses``; *duplicated* = responses beyond one per
trial, or a trial served again after it was answered (client-side check), or
answers acknowledged twice; *outside windows* (``outside_windows`` in the JSON; non-zero fails the run) = floor rows the
floor server stamped outside every floor phase (load that reached the target that
should have idled). *Unacked stored* counts rows for requests that errored on the
client side (not a loss).

    python benchmarks/listening_load.py [--participants 200] [--duration-s 30] [--rounds 6] \
        [--db sqlite|postgres|both] [--think-ms 1000] [--configs 2x8,3x4] [--audio] \
        [--get-each-trial] [--no-floor] [--server-stats] [--quick] [--json OUT]

``--server-stats`` also prints, for the app's and the floor's workers during the measured
rounds, how long each write transaction waited for SQLite's write queue and held it, the
garbage collections, and each request's wall and CPU time inside the worker
(``_server_stats_gunicorn.py``).

The load generator is asyncio + aiohttp in one process; its own CPU use is
reported (``client CPU``) so that a saturated generator is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get("JNDLAB_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECRET = "bench-secret-key-0123456789abcdef"
SLUG = "bench"
EXPERIMENT_CONFIG = {
    "references_per_participant": 2,
    "families_per_participant": 2,
    "catch_rate": 0.1,
    "practice_trials": 0,
    "screening": {"tests": []},
    "require_full_playback": True,
}
PROCEDURE_CONFIG: dict[str, Any] = {}  # the procedure's defaults (staircase: 80 trials / 12 reversals)
# The staircase, as when issue 18 was filed; the app's own default for same/different
# studies is the Psi method ("bayesian", flow_config.DEFAULT_PROCEDURE), whose answers
# cost more CPU (a posterior update and look-ahead): --procedure bayesian measures it.
PROCEDURE = "staircase"
PROCEDURES = ("staircase", "bayesian")


# --- the floor: one INSERT per request (gunicorn imports this: ``listening_load:floor_app()``) ----


def floor_app():
    """A bare Flask app: POST /floor inserts one row and commits. Same engine setup as the app."""
    from flask import Flask, jsonify, request
    from sqlalchemy import create_engine, text

    from listening_test.config import load_config
    from listening_test.db import configure_engine, pool_options

    url = os.environ["DATABASE_URL"]
    engine = create_engine(url, **pool_options(url, load_config()["DATABASE_POOL_SIZE"]))  # the app's pool
    configure_engine(engine)  # SQLite: WAL, BEGIN IMMEDIATE, busy_timeout, synchronous=NORMAL
    app = Flask("jndlab_floor")
    insert = text("INSERT INTO bench_floor (client, seq, answer, created_at) VALUES (:c, :s, :a, :t)")

    @app.get("/floor/ping")
    def ping():
        return jsonify(ok=True)

    @app.post("/floor")
    def floor():
        body = request.get_json()
        with engine.begin() as conn:
            conn.execute(
                insert, {"c": str(body["client"]), "s": int(body["seq"]), "a": str(body["answer"]), "t": time.time()}
            )
        return jsonify(recorded=True)

    return app


# --- setup ------------------------------------------------------------------------


def write_stimulus_set(folder: Path) -> Path:
    """2 references x 2 families x 4 levels, 0.5 s float WAVs at 16 kHz, and manifest.csv."""
    import numpy as np
    import soundfile as sf

    sr, rng, rows = 16000, np.random.default_rng(0), []

    def add(stimulus_id, reference, family, level, audio):
        rel = f"audio/{stimulus_id}.wav"
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, audio.astype(np.float32), sr, subtype="FLOAT")
        rows.append(
            {
                "stimulus_id": stimulus_id,
                "reference": reference,
                "path": rel,
                "family": family,
                "level": level,
                "params": json.dumps({"snr_db": 40 - level / 4}),
                "seed": 1,
                "sample_rate": sr,
                "num_samples": len(audio),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )

    for ref in ("ref_a", "ref_b"):
        clean = 0.1 * rng.standard_normal(sr // 2)
        add(ref, ref, "reference", 0, clean)
        for family in ("noise", "mp3"):
            for level in (10.0, 40.0, 70.0, 100.0):
                add(
                    f"{ref}_{family}_{int(level)}",
                    ref,
                    family,
                    level,
                    clean + level / 1000 * rng.standard_normal(len(clean)),
                )
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@contextmanager
def database(kind: str, tmp: Path):
    """Yield a DATABASE_URL for a fresh database; drop it afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'bench.sqlite'}"
        return
    from sqlalchemy import create_engine, text

    schema = f"jndlab_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, connect_args={"connect_timeout": 5})
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def prepare(url: str, manifest: Path, procedure: str = PROCEDURE) -> None:
    """alembic upgrade, the benchmark experiment (its tracks run ``procedure``), and the floor's table."""
    from flask_migrate import upgrade

    from listening_test import create_app
    from listening_test.db import db
    from listening_test.manifest_import import create_experiment

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET})
    with app.app_context():
        upgrade()
        create_experiment(
            db.session,
            manifest,
            procedure=procedure,
            name=SLUG,
            procedure_config=PROCEDURE_CONFIG,
            config=EXPERIMENT_CONFIG,
        )
        auto = "INTEGER PRIMARY KEY AUTOINCREMENT" if url.startswith("sqlite") else "SERIAL PRIMARY KEY"
        db.session.execute(
            db.text(
                f"CREATE TABLE bench_floor (id {auto}, client VARCHAR(64), seq INTEGER, "
                "answer VARCHAR(16), created_at DOUBLE PRECISION)"
            )
        )
        db.session.commit()
        db.engine.dispose()


def db_counts(url: str) -> dict[str, int]:
    """Integrity numbers straight from the database."""
    from sqlalchemy import create_engine, text

    from listening_test.db import configure_engine

    engine = create_engine(url)
    configure_engine(engine)
    q = {
        "responses": "SELECT COUNT(*) FROM responses",
        "answered_trials": "SELECT COUNT(*) FROM trials WHERE answered",
        "floor": "SELECT COUNT(*) FROM bench_floor",
        # more than one response for a trial (the UNIQUE constraint should make this impossible)
        "dup_responses": "SELECT COUNT(*) FROM (SELECT trial_id FROM responses GROUP BY trial_id "
        "HAVING COUNT(*) > 1) d",
        # answered flag and response rows disagree
        "mismatched": "SELECT COUNT(*) FROM trials t LEFT JOIN responses r ON r.trial_id = t.id "
        "WHERE (r.id IS NULL) = t.answered",
        # sessions in a trial stage must have exactly one open trial
        "open_trials_bad": "SELECT COUNT(*) FROM (SELECT s.id FROM sessions s LEFT JOIN trials t "
        "ON t.session_id = s.id AND NOT t.answered WHERE s.stage = 'main' "
        "GROUP BY s.id HAVING COUNT(t.id) <> 1) x",
    }
    try:
        with engine.connect() as conn:
            return {k: int(conn.execute(text(v)).scalar_one()) for k, v in q.items()}
    finally:
        engine.dispose()


# --- the server -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_KEEPALIVE_S = 5  # gunicorn --keep-alive
CLIENT_KEEPALIVE_S = 3  # below the server's: see interleave's connector


# listening_load.py --server-stats: serve's settings plus timings of SQLite's write queue
# and of the garbage collector in each worker.
SERVER_STATS_CONFIG = "python:_server_stats_gunicorn"


class Gunicorn:
    def __init__(self, target: str, url: str, workers: int, threads: int, log: Path, server_stats: Path | None = None):
        self.port = free_port()
        from listening_test.cli.serve import GUNICORN_CONFIG

        gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or "gunicorn"
        app = "listening_test:create_app()" if target == "app" else "listening_load:floor_app()"
        argv = [
            gunicorn,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--worker-class",
            "gthread",
            "--backlog",
            "2048",
            "--keep-alive",
            str(SERVER_KEEPALIVE_S),
            "--config",
            # serve's own settings, for the app and the floor alike (with --server-stats,
            # plus timings of the write queue and the collector: _server_stats_gunicorn.py)
            GUNICORN_CONFIG if server_stats is None else SERVER_STATS_CONFIG,
            "--pythonpath",
            f"{ROOT},{BENCH_DIR}",
            app,
        ]
        # Every simulated participant lands from 127.0.0.1: the per-address landing limit
        # (security.landing_limit, 30/min by default) would keep most of them waiting on 429s.
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SECRET_KEY": SECRET,
            "ADMIN_TOKEN": "bench-admin-token",
            "LANDING_RATE_LIMIT": "1000000 per minute",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{BENCH_DIR}",
        }
        if server_stats is not None:
            env["JNDLAB_SERVER_STATS"] = str(server_stats)
        self.log = log.open("w")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        self.ping = f"{self.base}/api/experiments/{SLUG}" if target == "app" else f"{self.base}/floor/ping"

    def wait_ready(self, timeout: float = 60.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.ping, timeout=2) as r:  # noqa: S310 - our own http:// URL
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {timeout} s; see {self.log.name}")

    def cpu_seconds(self) -> float:
        import psutil

        try:
            master = psutil.Process(self.proc.pid)
            procs = [master, *master.children(recursive=True)]
            total = 0.0
            for p in procs:
                t = p.cpu_times()
                total += t.user + t.system
            return total
        except psutil.Error:
            return float("nan")

    def worker_pids(self) -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.proc.pid).children()]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --- the clients ------------------------------------------------------------------


class Stats:
    """One target's client-side numbers; samples are kept per measured round."""

    def __init__(self, rounds: int) -> None:
        # seconds, the answer's POST (+ the GET with --get-each-trial), by the round the trial started in
        self.round_trips: list[list[float]] = [[] for _ in range(rounds)]
        self.get_s: list[float] = []  # pooled over the measured rounds
        self.post_s: list[float] = []
        self.audio_s: list[float] = []
        self.acked = 0  # answers with 200 recorded, duplicate false (whole run, measured or not)
        self.acked_duplicate = 0
        self.errors: dict[str, int] = {}
        self.served_twice = 0
        self.sessions = 0
        self.completed = 0

    @property
    def window_acked(self) -> int:
        return sum(len(r) for r in self.round_trips)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Stop(Exception):
    """Raised in a client by ``Gate.enter`` once the run is over."""


class Gate:
    """Lets one target's clients send only while one of its phases runs.

    A client wraps each unit of work (a landing with its consent steps, a trial, a floor POST)
    in ``enter()`` ... ``leave()``. While the gate is shut, ``enter`` waits; a client that waited
    then sleeps a random part of the think time before it sends, so that a phase does not open
    with every client at once. ``enter`` returns the measured round now running (None while
    warming up): the unit's samples belong to that round even if they finish after the gate
    shut. ``drained`` is set when nothing of this target is in flight.
    """

    def __init__(self, stop: asyncio.Event) -> None:
        self.opened = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.stop = stop
        self.round: int | None = None
        self.inflight = 0

    async def enter(self, rng: random.Random, stagger_s: float) -> int | None:
        while not self.opened.is_set():
            await self.opened.wait()
            if self.stop.is_set():
                raise Stop
            if stagger_s:
                await asyncio.sleep(rng.random() * stagger_s)
        if self.stop.is_set():
            raise Stop
        self.inflight += 1  # no await between the check above and this: the gate cannot shut in between
        self.drained.clear()
        return self.round

    def leave(self) -> None:
        self.inflight -= 1
        if not self.inflight:
            self.drained.set()


async def _request(http, method: str, url: str, stats: Stats, what: str, **kw) -> tuple[int, Any]:
    try:
        async with http.request(method, url, **kw) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            await r.read()
            return r.status, None
    except Exception as error:  # noqa: BLE001 - counted, never hidden
        stats.error(f"{what}: {error.__class__.__name__}")
        return 0, None


async def _land(i: int, base: str, http, stats: Stats) -> tuple[dict[str, str], dict] | None:
    """A new participant: land (a unique Prolific ID), consent, volume and instructions."""
    pid = f"bench{i}x{uuid.uuid4().hex[:8]}"
    status, body = await _request(
        http,
        "POST",
        f"{base}/api/experiments/{SLUG}/sessions",
        stats,
        "land",
        json={"params": {"PROLIFIC_PID": pid, "STUDY_ID": "S", "SESSION_ID": pid}},
    )
    if status != 201:
        stats.error(f"land {status}")
        return None
    stats.sessions += 1
    headers = {"X-Session-Token": body["session_token"], "X-CSRF-Token": body["csrf_token"]}
    state = body["state"]
    for step, payload in (("consent", {"consent": True}), ("volume", {}), ("instructions", {})):
        if state["stage"] == step:
            status, reply = await _request(
                http, "POST", f"{base}/api/session/{step}", stats, step, json=payload, headers=headers
            )
            if status != 200:
                stats.error(f"{step} {status}")
                break
            state = reply["state"]
    return headers, state


async def participant(
    i: int,
    base: str,
    http,
    stats: Stats,
    gate: Gate,
    ready: asyncio.Barrier,
    stop: asyncio.Event,
    think_s: float,
    audio: bool,
    get_each_trial: bool = False,
) -> None:
    """One simulated participant for the whole run: its session carries over from round to round."""
    rng = random.Random(i)
    first = True
    try:
        while not stop.is_set():
            await gate.enter(rng, think_s)
            try:
                landed = await _land(i, base, http, stats)
            finally:
                gate.leave()
            if landed is None:
                await asyncio.sleep(1)
                continue
            headers, state = landed
            if first:
                first = False
                await ready.wait()  # every participant has landed
                await asyncio.sleep(rng.random() * think_s)  # stagger the start
            trial_state = _TrialState(state)
            while not stop.is_set():
                measured = await gate.enter(rng, think_s)
                try:
                    pause = await _trial(base, http, stats, headers, trial_state, rng, measured, audio, get_each_trial)
                finally:
                    gate.leave()
                if pause is None:
                    break  # the session is over: land again as a new participant
                if pause:
                    await asyncio.sleep(pause)
                elif think_s:
                    await asyncio.sleep(think_s * (0.5 + rng.random()))  # mean think_s
    except Stop:
        pass


class _TrialState:
    def __init__(self, state: dict) -> None:
        self.state = state
        self.answered: set[int] = set()
        self.fetch = True  # the page GETs the state when it loads; afterwards each answer's reply carries it


async def _trial(
    base: str,
    http,
    stats: Stats,
    headers: dict[str, str],
    ts: _TrialState,
    rng: random.Random,
    measured: int | None,
    audio: bool,
    get_each_trial: bool,
) -> float | None:
    """One trial as the page runs it. None: the session left the main phase; else a pause
    before the next trial that replaces the think time when non-zero (after a failed GET)."""
    t0 = t1 = time.perf_counter()
    if ts.fetch or get_each_trial:
        status, reply = await _request(http, "GET", f"{base}/api/session", stats, "get", headers=headers)
        t1 = time.perf_counter()
        if status != 200:
            stats.error(f"get {status}")
            return 0.5
        ts.state, ts.fetch = reply["state"], False
        if not get_each_trial:
            t0 = t1  # the page's load (or reload after an error): not part of an answer's round trip
    if ts.state["stage"] != "main":
        stats.completed += ts.state["stage"] == "complete"
        return None
    trial = ts.state["trial"]
    if trial["id"] in ts.answered:
        stats.served_twice += 1
    answer = "different" if rng.random() < 0.5 else "same"
    status, reply = await _request(
        http,
        "POST",
        f"{base}/api/session/answer",
        stats,
        "answer",
        headers=headers,
        json={
            "trial_id": trial["id"],
            "nonce": trial["nonce"],
            "answer": answer,
            "response_time_ms": rng.randint(300, 3000),
            "play_counts": [1] * len(trial["clips"]),
        },
    )
    t2 = time.perf_counter()
    if status == 200 and reply.get("recorded"):
        ts.state = reply["state"]  # the next trial, or the next stage
        ts.answered.add(trial["id"])
        if reply.get("duplicate"):
            stats.acked_duplicate += 1
        else:
            stats.acked += 1
            if measured is not None:
                stats.round_trips[measured].append(t2 - t0)
                if get_each_trial:
                    stats.get_s.append(t1 - t0)
                stats.post_s.append(t2 - t1)
    else:
        ts.fetch = True  # an error reply carries no state: fetch it again, as the page does
        if status != 0:
            stats.error(f"answer {status}")
    if audio:
        for clip in trial["clips"]:
            t3 = time.perf_counter()
            s, _ = await _request(http, "GET", base + clip["url"], stats, "audio", headers=headers)
            if s != 200:
                stats.error(f"audio {s}")
            elif measured is not None:
                stats.audio_s.append(time.perf_counter() - t3)
    return 0.0


async def floor_client(i: int, base: str, http, stats: Stats, gate: Gate, stop: asyncio.Event, think_s: float) -> None:
    rng = random.Random(i)
    seq = 0
    try:
        while not stop.is_set():
            measured = await gate.enter(rng, think_s)  # shut at first: the floor's first phase staggers the start
            try:
                t0 = time.perf_counter()
                status, _reply = await _request(
                    http, "POST", f"{base}/floor", stats, "floor", json={"client": i, "seq": seq, "answer": "same"}
                )
                t1 = time.perf_counter()
            finally:
                gate.leave()
            seq += 1
            if status == 200:
                stats.acked += 1
                if measured is not None:
                    stats.round_trips[measured].append(t1 - t0)
            elif status:
                stats.error(f"floor {status}")
            if think_s:
                await asyncio.sleep(think_s * (0.5 + rng.random()))
    except Stop:
        pass


def round_order(r: int, targets: list[str]) -> list[str]:
    """ABBA: app then floor in even rounds, floor then app in odd ones (a linear drift cancels)."""
    return list(targets) if r % 2 == 0 else list(reversed(targets))


async def interleave(
    servers: dict[str, Gunicorn],
    n: int,
    rounds: int,
    round_s: float,
    think_s: float,
    audio: bool,
    warmup_s: float,
    get_each_trial: bool = False,
) -> dict[str, Any]:
    """Land the app's participants, warm each target up, then load one target at a time in
    ``rounds`` rounds of ``round_s`` per target (ABBA order). The other target's clients wait."""
    import aiohttp

    targets = list(servers)  # "app" first, then "floor" unless --no-floor
    stop = asyncio.Event()
    gates = {t: Gate(stop) for t in targets}
    stats = {t: Stats(rounds) for t in targets}
    ready = asyncio.Barrier(n + 1)
    phases: list[dict[str, Any]] = []

    async def phase(target: str, measured: int | None, seconds: float) -> None:
        gate = gates[target]
        cpu0 = {t: s.cpu_seconds() for t, s in servers.items()}
        client0, start, p0 = time.process_time(), time.time(), time.perf_counter()
        load = [os.getloadavg()[0]]
        gate.round = measured
        gate.opened.set()
        steps = max(1, int(seconds // 5))  # the 1-minute load average, every 5 s and at the end
        for _ in range(steps):
            await asyncio.sleep(seconds / steps)
            load.append(os.getloadavg()[0])
        gate.opened.clear()
        end, open_s = time.time(), time.perf_counter() - p0
        await asyncio.wait_for(gate.drained.wait(), 120)  # in-flight requests finish before the other starts
        wall = time.perf_counter() - p0
        cpu1 = {t: s.cpu_seconds() for t, s in servers.items()}
        phases.append(
            {
                "target": target,
                "round": measured,
                "start": start,
                "end": end,
                "drained": time.time(),
                "open_s": open_s,
                "wall_s": wall,
                "client_cpu_s": time.process_time() - client0,
                "server_cpu_s": cpu1[target] - cpu0[target],
                "idle_peer_cpu_s": sum(cpu1[t] - cpu0[t] for t in targets if t != target),
                "load": load,
            }
        )

    # The client drops an idle connection before gunicorn does: a connection reused just as
    # the server closes it fails with ClientOSError/ServerDisconnectedError (a race of the
    # load generator, not of the server: the answer was never sent). Clients wait out the
    # other target's phase, so idle connections are the rule between rounds.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=CLIENT_KEEPALIVE_S)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as http:
        tasks = [
            asyncio.create_task(
                participant(
                    i,
                    servers["app"].base,
                    http,
                    stats["app"],
                    gates["app"],
                    ready,
                    stop,
                    think_s,
                    audio,
                    get_each_trial,
                )
            )
            for i in range(n)
        ]
        if "floor" in servers:
            tasks += [
                asyncio.create_task(
                    floor_client(i, servers["floor"].base, http, stats["floor"], gates["floor"], stop, think_s)
                )
                for i in range(n)
            ]
        gates["app"].opened.set()
        t_land = time.perf_counter()
        await ready.wait()  # every participant has landed and reached the main phase
        landing_s = time.perf_counter() - t_land
        for target in targets:
            await phase(target, None, warmup_s)
        for r in range(rounds):
            for target in round_order(r, targets):
                await phase(target, r, round_s)
        stop.set()
        for gate in gates.values():
            gate.opened.set()  # wakes the waiting clients, which see stop and return
        await asyncio.gather(*tasks)  # in-flight requests finish: nothing is cancelled mid-answer
    return {"stats": stats, "phases": phases, "landing_s": landing_s}


def _ms(values: list[float], q: float) -> float | None:
    value = pct(values, q)
    return None if value is None else round(value, 1)


def pct(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``values`` (seconds) in ms; None when there are none
    (JSON ``null``: NaN is not JSON)."""
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))] * 1000


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def floor_rows_outside(url: str, windows: list[tuple[float, float]]) -> int:
    """Floor rows stamped (by the floor server) outside every floor phase: load that reached the
    floor while it should have idled (must be zero)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stamps = [row[0] for row in conn.execute(text("SELECT created_at FROM bench_floor"))]
    finally:
        engine.dispose()
    return sum(not any(a <= t <= b for a, b in windows) for t in stamps)


def _stats_rows(prefix: Path, kind: str, windows: list[tuple[float, float]]) -> list[list[float]]:
    """The lines a target's workers wrote (``_server_stats_gunicorn.py``: ``<prefix>-<kind>-<pid>.txt``)
    whose first column (a ``time.time()`` stamp) falls within ``windows``."""
    rows = [
        [float(x) for x in line.split()]
        for path in sorted(prefix.parent.glob(f"{prefix.name}-{kind}-*.txt"))
        for line in path.read_text().splitlines()
    ]
    return [r for r in rows if any(a <= r[0] <= b for a, b in windows)]


def write_lock_stats(prefix: Path, windows: list[tuple[float, float]]) -> dict[str, Any] | None:
    """Percentiles (ms) of the write queue's waits and holds that a target's workers wrote,
    of the transactions asked for within ``windows`` (the target's measured rounds: not the
    warm-up); None when there are none (PostgreSQL has no such queue)."""
    rows = _stats_rows(prefix, "lock", windows)
    if not rows:
        return None
    waits, holds = [r[1] / 1000 for r in rows], [r[2] / 1000 for r in rows]
    out: dict[str, Any] = {"transactions": len(rows)}
    for name, values in (("wait", waits), ("hold", holds)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}_ms"] = round(pct(values, q) or 0.0, 2)
    return out


def gc_stats(prefix: Path, windows: list[tuple[float, float]]) -> dict[str, Any] | None:
    """The garbage collections a target's workers timed within ``windows``: how many per
    generation, the longest (ms) and their total (ms); None when no worker wrote any."""
    if not any(prefix.parent.glob(f"{prefix.name}-gc-*.txt")):
        return None
    rows = _stats_rows(prefix, "gc", windows)
    by_generation = [sum(1 for r in rows if int(r[1]) == g) for g in range(3)]
    return {
        "collections": by_generation,
        "longest_ms": round(max((r[2] for r in rows), default=0.0), 2),
        "gen2_longest_ms": round(max((r[2] for r in rows if int(r[1]) == 2), default=0.0), 2),
        "total_ms": round(sum(r[2] for r in rows), 1),
    }


def request_stats(prefix: Path, windows: list[tuple[float, float]]) -> dict[str, Any] | None:
    """Percentiles (ms) of the requests a target's workers timed within ``windows``: the
    wall time inside the worker and the handling thread's CPU time; None when none were."""
    rows = _stats_rows(prefix, "request", windows)
    if not rows:
        return None
    out: dict[str, Any] = {"requests": len(rows)}
    for name, column in (("wall", 1), ("cpu", 2)):
        values = [r[column] / 1000 for r in rows]
        for q in (50, 90, 99):
            out[f"{name}_p{q}_ms"] = round(pct(values, q) or 0.0, 2)
    return out


def run_pair(url: str, workers: int, threads: int, args, tmp: Path) -> tuple[list[dict[str, Any]], list[dict]]:
    """The app and the floor on one database and one gunicorn configuration, in interleaved
    rounds. Returns a row per target and the phases (when each target had the load)."""
    targets = ["app"] if args.no_floor else ["app", "floor"]
    before = db_counts(url)
    servers: dict[str, Gunicorn] = {}
    try:
        for target in targets:
            stats_prefix = tmp / f"stats-{target}-{workers}x{threads}" if args.server_stats else None
            servers[target] = Gunicorn(
                target, url, workers, threads, tmp / f"gunicorn-{target}-{workers}x{threads}.log", stats_prefix
            )
        for server in servers.values():
            server.wait_ready()
        out = asyncio.run(
            interleave(
                servers,
                args.participants,
                args.rounds,
                args.duration_s / args.rounds,
                args.think_ms / 1000,
                args.audio,
                args.warmup_s,
                args.get_each_trial,
            )
        )
    finally:
        for server in servers.values():
            server.stop()
    after = db_counts(url)
    phases = out["phases"]
    floor_outside = (
        floor_rows_outside(url, [(p["start"], p["drained"]) for p in phases if p["target"] == "floor"])
        if "floor" in targets
        else 0
    )
    rows = []
    for target in targets:
        s: Stats = out["stats"][target]
        mine = [p for p in phases if p["target"] == target and p["round"] is not None]
        wall = sum(p["wall_s"] for p in mine)
        load = [x for p in mine for x in p["load"]]
        pooled = [x for r in s.round_trips for x in r]
        stored = (after["responses"] - before["responses"]) if target == "app" else (after["floor"] - before["floor"])
        rows.append(
            {
                "target": target,
                "workers": workers,
                "threads": threads,
                "participants": args.participants,
                "think_ms": args.think_ms,
                "get_each_trial": bool(args.get_each_trial) and target == "app",
                "rounds": args.rounds,
                "round_s": round(args.duration_s / args.rounds, 2),
                "duration_s": round(wall, 1),  # the measured phases, drains included
                "judgments_per_s": round(s.window_acked / sum(p["open_s"] for p in mine), 1),
                "samples": len(pooled),
                "p50_ms": _ms(pooled, 50),  # pooled over the rounds
                "p99_ms": _ms(pooled, 99),
                "max_ms": _ms(pooled, 100),
                "round_samples": [len(r) for r in s.round_trips],
                "round_p99_ms": [_ms(r, 99) for r in s.round_trips],
                "get_p50_ms": _ms(s.get_s, 50),
                "get_p99_ms": _ms(s.get_s, 99),
                "post_p50_ms": _ms(s.post_s, 50),
                "post_p99_ms": _ms(s.post_s, 99),
                "audio_p99_ms": _ms(s.audio_s, 99),
                "acked": s.acked,
                "stored": stored,
                "lost": max(s.acked - stored, 0),
                "unacked_stored": max(stored - s.acked, 0),
                "duplicated": s.acked_duplicate + s.served_twice + after["dup_responses"],
                "served_twice": s.served_twice,
                "db_mismatched": after["mismatched"],
                "db_open_trials_bad": after["open_trials_bad"] if target == "app" else 0,
                "outside_windows": floor_outside if target == "floor" else 0,
                "errors": s.errors,
                "sessions": s.sessions,
                "completed": s.completed,
                "landing_s": round(out["landing_s"], 1) if target == "app" else 0.0,
                "client_cpu_cores": round(sum(p["client_cpu_s"] for p in mine) / wall, 2),
                "server_cpu_cores": round(sum(p["server_cpu_s"] for p in mine) / wall, 2),
                # the other target's server while this one had the load: it should idle
                "idle_peer_cpu_cores": round(sum(p["idle_peer_cpu_s"] for p in mine) / wall, 2),
                # the machine's 1-minute load average during the measured phases (the cores are shared)
                "load_avg": round(sum(load) / len(load), 1),
                "load_avg_max": round(max(load), 1),
            }
        )
        if args.server_stats:
            windows = [(p["start"], p["drained"]) for p in mine]  # the measured rounds
            prefix = tmp / f"stats-{target}-{workers}x{threads}"
            rows[-1]["write_lock"] = write_lock_stats(prefix, windows)
            rows[-1]["gc"] = gc_stats(prefix, windows)
            rows[-1]["requests_in_worker"] = request_stats(prefix, windows)
    app = rows[0]
    if len(rows) == 2:
        floor = rows[1]
        per_round = [
            {
                "round": r,
                "order": "/".join(round_order(r, targets)),
                "app_p99_ms": a,
                "floor_p99_ms": f,
                "ratio": _ratio(a, f),
                "app_samples": app["round_samples"][r],
                "floor_samples": floor["round_samples"][r],
            }
            for r, (a, f) in enumerate(zip(app["round_p99_ms"], floor["round_p99_ms"]))
        ]
        ratios = [x["ratio"] for x in per_round if x["ratio"] is not None]
        app.update(
            {
                "p99_ratio": _ratio(app["p99_ms"], floor["p99_ms"]),  # the headline: pooled over the rounds
                "post_p99_ratio": _ratio(app["post_p99_ms"], floor["p99_ms"]),
                "round_ratio_median": round(statistics.median(ratios), 2) if ratios else None,
                "round_ratio_min": min(ratios, default=None),
                "round_ratio_max": max(ratios, default=None),
                "per_round": per_round,
            }
        )
    return rows, phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument(
        "--duration-s", type=float, default=30.0, help="measured load per target, split over the rounds"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="interleaved rounds: each gives each target --duration-s/ROUNDS of load, one at a time (ABBA order)",
    )
    parser.add_argument("--warmup-s", type=float, default=3.0, help="unmeasured load per target before the rounds")
    parser.add_argument(
        "--think-ms",
        type=float,
        default=1000.0,
        help="mean pause between the reply to a participant's answer and its next answer "
        "(uniform 0.5-1.5x; people take 3-10 s to listen to two clips and decide)",
    )
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--configs", default="2x8,3x4", help="gunicorn WORKERSxTHREADS, comma-separated")
    parser.add_argument("--audio", action="store_true", help="also fetch both clips of every trial")
    parser.add_argument(
        "--get-each-trial",
        action="store_true",
        help="GET /api/session before every answer (the round trip before issue 18; the page GETs only on load)",
    )
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument(
        "--server-stats",
        action="store_true",
        help="time, in the app's and the floor's workers, each request (wall and CPU), each garbage collection and "
        "(SQLite) each write transaction's wait for and hold of the write queue (_server_stats_gunicorn.py), and print them",
    )
    parser.add_argument(
        "--procedure",
        choices=PROCEDURES,
        default=PROCEDURE,
        help="the tracks' adaptive procedure (the app's default for same/different studies is bayesian)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="20 participants, 4 rounds of 1 s, one config (smoke test)"
    )
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.participants, args.duration_s, args.warmup_s = min(args.participants, 20), 4.0, 1.0
        args.rounds = min(args.rounds, 4)
        args.configs = args.configs.split(",")[0]
    if args.rounds < 1 or args.duration_s <= 0:
        parser.error("--rounds must be at least 1 and --duration-s positive")
    configs = [tuple(int(x) for x in c.lower().split("x")) for c in args.configs.split(",")]
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    rows, phases = [], []
    with tempfile.TemporaryDirectory(prefix="jndlab-load-") as tmpdir:
        tmp = Path(tmpdir)
        manifest = write_stimulus_set(tmp / "stimuli")
        for kind in kinds:
            with database(kind, tmp) as url:
                prepare(url, manifest, args.procedure)
                for workers, threads in configs:
                    pair, pair_phases = run_pair(url, workers, threads, args, tmp)
                    for row in pair:
                        row = {"db": kind, **row}
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
                    phases += [{"db": kind, "workers": workers, "threads": threads, **p} for p in pair_phases]
    print(format_table(rows))
    if summary := format_rounds(rows):
        print(summary)
    if server := format_server_stats(rows):
        print(server)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "rows": rows, "phases": phases}, indent=2))
    bad = [
        r
        for r in rows
        if r["lost"] or r["duplicated"] or r["db_mismatched"] or r["db_open_trials_bad"] or r["outside_windows"]
    ]
    return 1 if bad else 0


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "| db | gunicorn | endpoint | clients | think ms | rounds x s | judgments/s | p50 ms | p99 ms | "
            "GET p99 | POST p99 | lost | dup | errors | client CPU | server CPU | load avg (max) | "
            "p99 / floor p99 | round ratios: median (min-max) | POST p99 / floor p99 |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = rounds = post_ratio = ""
        if r["target"] == "app" and "p99_ratio" in r:
            # Per trial the page sends the POST alone, like the floor (it renders the answer's
            # reply and GETs only on load); --get-each-trial makes the trial two requests.
            ratio, post_ratio = _x(r["p99_ratio"]), _x(r["post_p99_ratio"])
            rounds = f"{_x(r['round_ratio_median'])} ({_x(r['round_ratio_min'])}-{_x(r['round_ratio_max'])})"
        endpoint = "floor (1 INSERT)"
        if r["target"] == "app":
            endpoint = "trial (GET+POST)" if r.get("get_each_trial") else "trial (POST)"
        errors = sum(r["errors"].values())
        lines.append(
            f"| {r['db']} | {r['workers']}x{r['threads']} gthread | {endpoint} | {r['participants']} | "
            f"{r['think_ms']:.0f} | {r['rounds']} x {r['round_s']:g} | {r['judgments_per_s']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r['get_p99_ms'] if r.get('get_each_trial') else '-'} | "
            f"{r['post_p99_ms'] if r['target'] == 'app' else '-'} | {r['lost']} | {r['duplicated']} | "
            f"{errors} | {r['client_cpu_cores']} | {r['server_cpu_cores']} | "
            f"{r['load_avg']} ({r['load_avg_max']}) | {ratio} | {rounds} | {post_ratio} |"
        )
    return "\n".join(lines)


def format_server_stats(rows: list[dict[str, Any]]) -> str:
    """With --server-stats, per target: the write queue's wait and hold, the requests' wall and CPU time in
    the worker (ms), the collections."""
    lines = []
    for r in rows:
        where = f"{r['db']} {r['workers']}x{r['threads']} {r['target']}"
        if w := r.get("write_lock"):
            lines.append(
                f"{where}: write lock wait p50/p90/p99 "
                f"{w['wait_p50_ms']}/{w['wait_p90_ms']}/{w['wait_p99_ms']} ms, hold "
                f"{w['hold_p50_ms']}/{w['hold_p90_ms']}/{w['hold_p99_ms']} ms ({w['transactions']} transactions)"
            )
        if q := r.get("requests_in_worker"):
            lines.append(
                f"{where}: in the worker, request wall p50/p90/p99 "
                f"{q['wall_p50_ms']}/{q['wall_p90_ms']}/{q['wall_p99_ms']} ms, its thread's CPU "
                f"{q['cpu_p50_ms']}/{q['cpu_p90_ms']}/{q['cpu_p99_ms']} ms ({q['requests']} requests)"
            )
        if c := r.get("gc"):
            n0, n1, n2 = c["collections"]
            lines.append(
                f"{where}: garbage collections (generation 0/1/2) {n0}/{n1}/{n2}, longest {c['longest_ms']} ms "
                f"(generation 2: {c['gen2_longest_ms']} ms), {c['total_ms']} ms in all"
            )
    return "\n".join(lines)


def format_rounds(rows: list[dict[str, Any]]) -> str:
    """One line per database and configuration: each round's app and floor p99 (ms) and their ratio."""
    lines = []
    for r in rows:
        if r["target"] != "app" or "per_round" not in r:
            continue
        cells = " | ".join(
            f"{x['app_p99_ms']}/{x['floor_p99_ms']} ({_x(x['ratio'])})" + ("" if x["round"] % 2 == 0 else "*")
            for x in r["per_round"]
        )
        lines.append(f"{r['db']} {r['workers']}x{r['threads']}: p99 ms app/floor per round (* floor first): {cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
