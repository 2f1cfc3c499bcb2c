"""benchmarks/listening_load.py loads the app and the floor in interleaved rounds, one at a time.

The gate that shuts a target's clients out while the other has the load, the ABBA order, the
per-round summary, and (slow) a short SQLite run whose phases must not overlap, whose floor rows
must all fall inside floor phases, and whose every round must hold samples of both targets.
Timings are the benchmark's, not checked here.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmark_modules import BENCHMARKS, load_benchmark

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = BENCHMARKS / "listening_load.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("listening_load")


def test_rounds_alternate_abba(bench):
    orders = [bench.round_order(r, ["app", "floor"]) for r in range(4)]
    assert orders == [["app", "floor"], ["floor", "app"], ["app", "floor"], ["floor", "app"]]
    assert bench.round_order(1, ["app"]) == ["app"]  # --no-floor


def test_gate_holds_clients_while_shut_and_counts_what_is_in_flight(bench):
    async def scenario():
        stop = asyncio.Event()
        gate = bench.Gate(stop)
        rng = random.Random(0)
        entered: list[int | None] = []

        async def client():
            try:
                while True:
                    entered.append(await gate.enter(rng, 0.0))
                    assert not gate.drained.is_set()
                    await asyncio.sleep(0.01)
                    gate.leave()
                    await asyncio.sleep(0)
            except bench.Stop:
                return "stopped"

        task = asyncio.create_task(client())
        await asyncio.sleep(0.05)
        assert entered == [] and gate.drained.is_set()  # shut: nothing sent
        gate.round = 3
        gate.opened.set()
        await asyncio.sleep(0.05)
        gate.opened.clear()
        await asyncio.wait_for(gate.drained.wait(), 1)
        sent = len(entered)
        assert sent > 0 and set(entered) == {3}
        await asyncio.sleep(0.05)
        assert len(entered) == sent  # shut again: nothing more
        stop.set()
        gate.opened.set()
        assert await asyncio.wait_for(task, 1) == "stopped"
        assert len(entered) == sent

    asyncio.run(scenario())


def test_rounds_summary_line(bench):
    app = {
        "db": "sqlite",
        "workers": 2,
        "threads": 8,
        "target": "app",
        "per_round": [
            {"round": 0, "app_p99_ms": 20.0, "floor_p99_ms": 10.0, "ratio": 2.0},
            {"round": 1, "app_p99_ms": 12.0, "floor_p99_ms": None, "ratio": None},
        ],
    }
    line = bench.format_rounds([app, {**app, "target": "floor"}])
    assert line == "sqlite 2x8: p99 ms app/floor per round (* floor first): 20.0/10.0 (2.0x) | 12.0/None (-)*"


def test_server_stats_read_every_workers_files(bench, tmp_path):
    (tmp_path / "stats-app-2x8-lock-11.txt").write_text("100.5 0.0 2.0\n101.0 10.0 4.0\n50.0 900.0 900.0\n")
    (tmp_path / "stats-app-2x8-lock-12.txt").write_text("200.0 1.0 3.0\n")
    (tmp_path / "stats-floor-2x8-lock-13.txt").write_text("100.7 5.0 5.0\n")
    (tmp_path / "stats-app-2x8-gc-11.txt").write_text("100.6 0 0.5\n100.9 2 12.0\n50.0 2 80.0\n200.5 1 1.5\n")
    windows = [(100.0, 102.0), (199.0, 201.0)]  # the measured rounds: what happened at 50.0 is warm-up
    stats = bench.write_lock_stats(tmp_path / "stats-app-2x8", windows)
    assert stats["transactions"] == 3
    assert (stats["wait_p50_ms"], stats["wait_p99_ms"]) == (1.0, 10.0)
    assert (stats["hold_p50_ms"], stats["hold_p99_ms"]) == (3.0, 4.0)
    assert bench.write_lock_stats(tmp_path / "stats-app-3x4", windows) is None  # PostgreSQL: no queue, no files
    collections = bench.gc_stats(tmp_path / "stats-app-2x8", windows)
    assert collections == {"collections": [1, 1, 1], "longest_ms": 12.0, "gen2_longest_ms": 12.0, "total_ms": 14.0}
    assert bench.gc_stats(tmp_path / "stats-app-3x4", windows) is None
    (tmp_path / "stats-app-2x8-request-11.txt").write_text("100.1 4.0 3.0\n50.0 500.0 400.0\n")
    (tmp_path / "stats-app-2x8-request-12.txt").write_text("200.2 2.0 1.0\n101.5 6.0 2.0\n")
    requests = bench.request_stats(tmp_path / "stats-app-2x8", windows)
    assert requests["requests"] == 3  # the warm-up's request at 50.0 is left out
    assert (requests["wall_p50_ms"], requests["wall_p99_ms"]) == (4.0, 6.0)
    assert (requests["cpu_p50_ms"], requests["cpu_p99_ms"]) == (2.0, 3.0)
    assert bench.request_stats(tmp_path / "stats-app-3x4", windows) is None
    row = {
        "db": "sqlite",
        "workers": 2,
        "threads": 8,
        "target": "app",
        "write_lock": stats,
        "gc": collections,
        "requests_in_worker": requests,
    }
    floor = {**row, "target": "floor", "write_lock": None, "gc": None, "requests_in_worker": None}
    assert bench.format_server_stats([row, floor]) == (
        "sqlite 2x8 app: write lock wait p50/p90/p99 1.0/10.0/10.0 ms, hold 3.0/4.0/4.0 ms (3 transactions)\n"
        "sqlite 2x8 app: in the worker, request wall p50/p90/p99 4.0/6.0/6.0 ms, its thread's CPU 2.0/3.0/3.0 ms "
        "(3 requests)\n"
        "sqlite 2x8 app: garbage collections (generation 0/1/2) 1/1/1, longest 12.0 ms (generation 2: 12.0 ms), "
        "14.0 ms in all"
    )


@pytest.mark.slow
def test_short_interleaved_run_on_sqlite(tmp_path):
    out_json = tmp_path / "load.json"
    rounds = 3
    out = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK),
            "--db",
            "sqlite",
            "--configs",
            "1x4",
            "--participants",
            "8",
            "--think-ms",
            "200",
            "--duration-s",
            "3",
            "--rounds",
            str(rounds),
            "--warmup-s",
            "0.5",
            "--server-stats",
            "--json",
            str(out_json),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    result = json.loads(out_json.read_text())
    app, floor = result["rows"]
    assert (app["target"], floor["target"]) == ("app", "floor")
    for row in (app, floor):
        assert row["lost"] == row["duplicated"] == row["db_mismatched"] == row["db_open_trials_bad"] == 0
        assert len(row["round_samples"]) == rounds and all(row["round_samples"])
        assert row["samples"] == sum(row["round_samples"])
    assert floor["outside_windows"] == 0
    assert [x["order"] for x in app["per_round"]] == ["app/floor", "floor/app", "app/floor"]
    assert app["p99_ratio"] == pytest.approx(app["p99_ms"] / floor["p99_ms"], abs=0.01)
    assert app["round_ratio_min"] <= app["round_ratio_median"] <= app["round_ratio_max"]
    # --server-stats: every worker's write transactions, app and floor (one per floor INSERT at least)
    for row in (app, floor):
        lock = row["write_lock"]
        assert lock["transactions"] >= (row["samples"] if row is floor else 1) * 0.9  # a request at a round's edge
        assert 0 <= lock["wait_p50_ms"] <= lock["wait_p90_ms"] <= lock["wait_p99_ms"]
        assert 0 < lock["hold_p50_ms"] <= lock["hold_p90_ms"] <= lock["hold_p99_ms"]
    assert "sqlite 1x4 app: write lock wait p50/p90/p99" in out.stdout
    assert app["gc"] is not None and floor["gc"] is not None
    assert "sqlite 1x4 floor: garbage collections (generation 0/1/2)" in out.stdout
    # every answer and floor INSERT of the measured rounds, timed inside the workers
    for row in (app, floor):
        timed = row["requests_in_worker"]
        assert timed["requests"] >= row["samples"] * 0.9
        assert 0 < timed["cpu_p50_ms"] <= timed["wall_p50_ms"] * 1.05  # a thread's CPU fits in its wall time
        assert timed["wall_p50_ms"] <= timed["wall_p90_ms"] <= timed["wall_p99_ms"]
        assert timed["wall_p50_ms"] <= row["p50_ms"] * 1.05  # the worker's part of the client's round trip
    assert "sqlite 1x4 app: in the worker, request wall p50/p90/p99" in out.stdout

    # one target at a time: each phase (drain included) ends before the next one starts
    phases = result["phases"]
    assert [(p["target"], p["round"]) for p in phases] == [
        ("app", None),
        ("floor", None),
        ("app", 0),
        ("floor", 0),
        ("floor", 1),
        ("app", 1),
        ("app", 2),
        ("floor", 2),
    ]
    for before, after in zip(phases, phases[1:]):
        assert before["start"] < before["end"] <= before["drained"] <= after["start"]
    assert "p99 ms app/floor per round" in out.stdout
