"""Where jobs run: in this process, in local worker processes, or on a Dask cluster.

Every runner yields ``JobResult`` objects in completion order; the result of a run does not
depend on the runner (the orchestrator sorts rows canonically).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Iterator, Sequence

from perturbations.generate.jobs import Job, JobResult, run_job
from perturbations.generate.plan import GenerateError


class Runner:
    """Runs jobs and yields their results in completion order."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def map_unordered(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SerialRunner(Runner):
    """One job after the other in this process (``--workers 1``)."""

    def map_unordered(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        for job in jobs:
            yield run_job(job)


class ProcessRunner(Runner):
    """``--workers K``: local worker processes (forkserver: safe beside threads, cheaper than spawn)."""

    def __init__(self, workers: int):
        if workers < 1:
            raise GenerateError(f"--workers must be at least 1, got {workers}")
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("forkserver")
        )

    def map_unordered(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        futures = [self.pool.submit(run_job, job) for job in jobs]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskRunner(Runner):
    """``--scheduler ADDRESS``: an existing Dask distributed cluster.

    The workers need this package importable and the output folder on a shared filesystem.
    """

    def __init__(self, address: str, *, timeout_s: float = 10.0):
        from distributed import Client

        try:
            self.client = Client(address, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError) as error:
            raise GenerateError(f"cannot reach the Dask scheduler at {address} ({error})") from None

    def map_unordered(self, jobs: Sequence[Job]) -> Iterator[JobResult]:
        from distributed import as_completed

        if not jobs:
            return
        # pure=False: keys must not collide with an earlier run's cached results on a long-lived cluster
        futures = self.client.map(run_job, list(jobs), pure=False)
        try:
            for future in as_completed(futures, loop=self.client.loop):  # our client is not the default one
                yield future.result()
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        self.client.close()


def make_runner(workers: int = 1, scheduler: str | None = None) -> Runner:
    """``DaskRunner(scheduler)`` when a scheduler address is given, else ``SerialRunner`` for one
    worker and ``ProcessRunner(workers)`` for more. Raises ``GenerateError`` for ``workers`` < 1
    (with more than one worker asked for) or an unreachable scheduler."""
    if scheduler:
        return DaskRunner(scheduler)
    if workers <= 1:
        return SerialRunner()
    return ProcessRunner(workers)
