"""gunicorn settings for ``listening_load.py --server-stats``: serve's own
(``listening_test.gunicorn_conf``), plus timings of SQLite's write queue
(``listening_test.db.WriteQueue``) and of the garbage collector in each worker, for the
app and the floor alike. Not a benchmark itself (the leading underscore keeps it out of
tests/test_benchmarks.py, which runs every benchmark's --quick).

For every write transaction a worker records how long it waited for the queue (its
thread lock and, across processes, the flock) and how long it held it (BEGIN IMMEDIATE
to COMMIT/ROLLBACK), in ms, and writes them at exit to ``$JNDLAB_SERVER_STATS-lock-<pid>.txt``
(one "asked wait hold" line per transaction; ``asked``: when it asked, ``time.time()``,
so that the benchmark can keep the transactions of its measured rounds). A transaction's hold includes whatever its
thread waited for meanwhile (the GIL, the CPU), which is the point: under load that is
what the other writers wait for.

Every garbage collection is timed too (``gc.callbacks``; it stops every thread of the
worker meanwhile), into ``$JNDLAB_SERVER_STATS-gc-<pid>.txt``: "when generation ms" lines.

Every request is timed inside the worker (gunicorn's ``pre_request``/``post_request``
hooks: from the parsed request to the response sent) into
``$JNDLAB_SERVER_STATS-request-<pid>.txt``: "when wall_ms cpu_ms" lines, ``cpu_ms`` being
the handling thread's own CPU time (``time.thread_time``). Wall minus CPU is what
the request waited for inside the worker (the GIL, the database, the write queue); the
client's round trip minus the wall is what it waited for outside (gunicorn's accept and
send, the kernel, the load generator).
"""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

from listening_test.gunicorn_conf import post_worker_init as _serve_post_worker_init

_events: list[tuple[float, float, float]] = []
_acquired: dict[int, tuple[float, float, float]] = {}  # thread id -> (asked: time.time(), asked, got: perf_counter)
_collections: list[tuple[float, int, float]] = []  # (time.time(), generation, ms)
_collecting: list[tuple[float, float]] = []  # the running collection's (time.time(), perf_counter)
_requests: list[tuple[float, float, float]] = []  # (time.time(), wall ms, thread CPU ms)
_started = threading.local()  # the handling thread's request: (time.time(), perf_counter, thread_time)


def _time_collections(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _collecting[:] = [(time.time(), time.perf_counter())]
    elif _collecting:
        stamp, started = _collecting.pop()
        _collections.append((stamp, int(info["generation"]), (time.perf_counter() - started) * 1e3))


def _instrument() -> None:
    from listening_test.db import WriteQueue

    acquire, release = WriteQueue.acquire, WriteQueue.release

    def timed_acquire(self, dbapi_connection) -> None:
        me = threading.get_ident()
        if me in _acquired:  # the holder opening a second transaction: no wait (WriteQueue.acquire)
            acquire(self, dbapi_connection)
            return
        stamp, asked = time.time(), time.perf_counter()
        acquire(self, dbapi_connection)
        _acquired[me] = (stamp, asked, time.perf_counter())

    def timed_release(self, dbapi_connection) -> bool:
        released = release(self, dbapi_connection)
        if released:
            times = _acquired.pop(threading.get_ident(), None)
            if times is not None:
                stamp, asked, got = times
                _events.append((stamp, (got - asked) * 1e3, (time.perf_counter() - got) * 1e3))
        return released

    WriteQueue.acquire, WriteQueue.release = timed_acquire, timed_release  # type: ignore[method-assign]


def post_worker_init(worker: Any) -> None:
    _instrument()
    _serve_post_worker_init(worker)
    gc.callbacks.append(_time_collections)


def pre_request(worker: Any, req: Any) -> None:
    _started.times = (time.time(), time.perf_counter(), time.thread_time())


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    times = getattr(_started, "times", None)
    if times is None:
        return
    _started.times = None
    stamp, wall, cpu = times
    _requests.append((stamp, (time.perf_counter() - wall) * 1e3, (time.thread_time() - cpu) * 1e3))


def worker_exit(server: Any, worker: Any) -> None:
    prefix = os.environ.get("JNDLAB_SERVER_STATS")
    if not prefix:
        return
    with open(f"{prefix}-lock-{os.getpid()}.txt", "w") as out:
        out.writelines(f"{stamp:.6f} {wait:.4f} {hold:.4f}\n" for stamp, wait, hold in _events)
    with open(f"{prefix}-gc-{os.getpid()}.txt", "w") as out:
        out.writelines(f"{stamp:.6f} {generation} {ms:.4f}\n" for stamp, generation, ms in _collections)
    with open(f"{prefix}-request-{os.getpid()}.txt", "w") as out:
        out.writelines(f"{stamp:.6f} {wall:.4f} {cpu:.4f}\n" for stamp, wall, cpu in _requests)
