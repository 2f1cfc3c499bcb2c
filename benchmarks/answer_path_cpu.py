"""CPU per request of the participant's hot path against the bare-INSERT floor, in one process (issue 18).

``listening_load.py`` measures latency under load through gunicorn, where the machine's
other work (the load generator, PostgreSQL, other jobs) moves the numbers. This benchmark
takes the server's own cost apart from that: one process, one thread, Flask's test
client, the same benchmark experiment and the same floor app as ``listening_load.py``,
on the same database in the same run. For each database it reports, per request:

* ``POST /api/session/answer`` (what a participant waits for between trials),
* ``GET /api/session`` (sent only when the page loads),
* the floor: ``POST /floor``, one INSERT and a commit (``listening_load.floor_app``),

as CPU time (``time.process_time``) and wall time (p50/p99, single-threaded: no queueing),
and the ratio of each to the floor. ``--profile OUT`` also runs pyinstrument over the
answers and writes its call tree (text) to OUT.

    python benchmarks/answer_path_cpu.py [--db sqlite|postgres|both] [--answers 1000] \
        [--participants 20] [--profile OUT.txt] [--json OUT.json] [--quick]

PostgreSQL is the server at ``JNDLAB_BENCH_POSTGRES_URL`` (default 127.0.0.1:5432, database
``test``), in a throwaway schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
for path in (str(ROOT), str(BENCH_DIR)):
    if path not in sys.path:
        sys.path.insert(0, path)

import listening_load as load  # noqa: E402 - the same experiment, database set-up and floor app


def _to_main(client, index: int) -> dict[str, Any]:
    """Land one participant and take it to its first main trial; returns headers and state."""
    pid = f"cpu{index}"
    reply = client.post(
        f"/api/experiments/{load.SLUG}/sessions",
        json={"params": {"PROLIFIC_PID": pid, "STUDY_ID": "S", "SESSION_ID": pid}},
    )
    if reply.status_code != 201:
        raise RuntimeError(f"landing answered {reply.status_code}: {reply.get_data(as_text=True)[:300]}")
    body = reply.get_json()
    headers = {"X-Session-Token": body["session_token"], "X-CSRF-Token": body["csrf_token"]}
    state = body["state"]
    for step, payload in (("consent", {"consent": True}), ("volume", {}), ("instructions", {})):
        if state["stage"] == step:
            state = client.post(f"/api/session/{step}", json=payload, headers=headers).get_json()["state"]
    return {"headers": headers, "state": state, "index": index}


def _ok(reply) -> None:
    """An error reply would time the error path: stop instead."""
    if reply.status_code != 200:
        raise RuntimeError(f"{reply.request.path} answered {reply.status_code}: {reply.get_data(as_text=True)[:300]}")


def _summary(cpu_s: float, walls_s: list[float]) -> dict[str, float]:
    return {
        "cpu_ms": round(cpu_s / len(walls_s) * 1e3, 3),
        "wall_p50_ms": round(load.pct(walls_s, 50) or 0.0, 3),
        "wall_p99_ms": round(load.pct(walls_s, 99) or 0.0, 3),
    }


def measure(url: str, answers: int, participants: int, profile_out: Path | None) -> dict[str, Any]:
    """Per-request CPU and wall time of the answer, the state GET and the floor on ``url``."""
    os.environ["DATABASE_URL"] = url  # floor_app reads it, as under gunicorn
    from listening_test import create_app

    # Every participant lands from the same address: as listening_load.py, lift the
    # per-address landing limit (30/min by default), which 31 landings would hit.
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": load.SECRET, "LANDING_RATE_LIMIT": "1000000 per minute"}
    )
    client, floor = app.test_client(), load.floor_app().test_client()
    rng = random.Random(0)
    people = [_to_main(client, i) for i in range(participants)]
    next_index = participants

    def answer(person: dict[str, Any]) -> None:
        nonlocal next_index
        trial = person["state"]["trial"]
        reply = client.post(
            "/api/session/answer",
            headers=person["headers"],
            json={
                "trial_id": trial["id"],
                "nonce": trial["nonce"],
                "answer": rng.choice(("same", "different")),
                "response_time_ms": rng.randint(300, 3000),
                "play_counts": [1] * len(trial["clips"]),
            },
        )
        if reply.status_code != 200:
            raise RuntimeError(f"answer {reply.status_code}: {reply.get_data(as_text=True)[:300]}")
        person["state"] = reply.get_json()["state"]
        if person["state"]["stage"] != "main":  # the session ended: a new participant takes the seat
            person.update(_to_main(client, next_index))
            next_index += 1

    def timed(call, n: int) -> tuple[float, list[float]]:
        walls, cpu0 = [], time.process_time()
        for k in range(n):
            t0 = time.perf_counter()
            call(k)
            walls.append(time.perf_counter() - t0)
        return time.process_time() - cpu0, walls

    warm = max(20, answers // 20)
    for k in range(warm):
        answer(people[k % participants])
    profiler = None
    if profile_out is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
    answer_cpu, answer_walls = timed(lambda k: answer(people[k % participants]), answers)
    if profiler is not None:
        profiler.stop()
        profile_out.parent.mkdir(parents=True, exist_ok=True)
        profile_out.write_text(profiler.output_text(unicode=False, color=False))
    get_cpu, get_walls = timed(
        lambda k: _ok(client.get("/api/session", headers=people[k % participants]["headers"])), answers
    )
    floor_cpu, floor_walls = timed(
        lambda k: _ok(floor.post("/floor", json={"client": k, "seq": k, "answer": "same"})), answers
    )
    out = {
        "answer": _summary(answer_cpu, answer_walls),
        "get": _summary(get_cpu, get_walls),
        "floor": _summary(floor_cpu, floor_walls),
        "profiled": profiler is not None,
    }
    for what in ("answer", "get"):
        out[what]["cpu_x_floor"] = round(out[what]["cpu_ms"] / out["floor"]["cpu_ms"], 2)
        out[what]["wall_p99_x_floor"] = round(out[what]["wall_p99_ms"] / out["floor"]["wall_p99_ms"], 2)
    from listening_test.db import db

    with app.app_context():
        db.engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--answers", type=int, default=1000, help="timed answers (and as many GETs and floor INSERTs)")
    parser.add_argument("--participants", type=int, default=20, help="sessions answered in turn")
    parser.add_argument("--profile", type=Path, default=None, help="write pyinstrument's call tree of the answers here")
    parser.add_argument("--json", dest="json_out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="SQLite, 60 answers (a smoke run)")
    parser.add_argument(
        "--procedure",
        choices=load.PROCEDURES,
        default=load.PROCEDURE,
        help="the tracks' adaptive procedure (the app's default for same/different studies is bayesian)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.db, args.answers, args.participants = "sqlite", 60, 4
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    rows = []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="jndlab-answer-cpu-") as tmpdir:
        tmp = Path(tmpdir)
        manifest = load.write_stimulus_set(tmp / "stimuli")
        for kind in kinds:
            with load.database(kind, tmp) as url:
                load.prepare(url, manifest, args.procedure)
                profile = None
                if args.profile is not None:
                    profile = args.profile.with_name(f"{args.profile.stem}-{kind}{args.profile.suffix}")
                rows.append({"db": kind, **measure(url, args.answers, args.participants, profile)})
    load_end = os.getloadavg()[0]
    print(
        "| db | request | CPU ms | x floor CPU | wall p50 ms | wall p99 ms | x floor p99 |\n"
        "|---|---|---|---|---|---|---|"
    )
    for row in rows:
        for what, label in (("answer", "POST /api/session/answer"), ("get", "GET /api/session"), ("floor", "floor")):
            r = row[what]
            print(
                f"| {row['db']} | {label} | {r['cpu_ms']} | {r.get('cpu_x_floor', '')} | {r['wall_p50_ms']} | "
                f"{r['wall_p99_ms']} | {r.get('wall_p99_x_floor', '')} |"
            )
    print(
        f"\n{args.answers} requests of each kind per database, one thread, {args.procedure} tracks; "
        f"load average {load_start:.2f} "
        f"at the start, {load_end:.2f} at the end (2-core machines: anything above ~0.5 is other work)"
    )
    if any(row["profiled"] for row in rows):
        print("pyinstrument was running during the answers: their times above include its overhead")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        summary = {"args": {k: str(v) for k, v in vars(args).items()}, "load_avg": [load_start, load_end], "rows": rows}
        args.json_out.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
