"""One simulated study: build the crowd, run it over HTTP, write truth, answers and summary."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .auditory import DistanceCache
from .client import Chaos, CrowdResult, format_summary, run_crowd, summarize
from .population import PopulationConfig, kind_counts, make_population, parse_bad_workers
from .truth import StimulusIndex, population_truth, write_truth

PLATFORMS = {"mixed": ("mturk", "prolific"), "mturk": ("mturk",), "prolific": ("prolific",)}


def simulate(
    *,
    url: str,
    slug: str,
    participants: int,
    concurrency: int = 4,
    bad_workers: str | float = 0,
    seed: int = 0,
    manifest: str | Path | None = None,
    platform: str = "mixed",
    out_dir: Path | None = None,
    truth_out: Path | None = None,
    reload_rate: float = 0.0,
    double_submit_rate: float = 0.0,
    timeout_s: float = 30.0,
    progress: bool = True,
    stats_fetcher: Callable[[], dict | None] | None = None,
    echo: Callable[[str], Any] = print,
    population_config: PopulationConfig | None = None,
) -> dict[str, Any]:
    """Run ``participants`` virtual listeners; returns the summary (also written as JSON).

    Writes into ``out_dir`` (when given): ``truth.json`` (every listener's parameters,
    keyed by the platform worker id, plus level-scale truth when a manifest is given),
    ``answers.jsonl`` (every answer appended and flushed as the server acknowledges it)
    and ``summary.json``.

    SIGTERM or SIGINT (when called from the main thread) stops the run gracefully: no new
    participant or request starts, requests in flight finish, then truth and summary are
    written with what the run has (``summary["interrupted"]`` names the signal) and the
    summary is returned; a second signal of the same kind acts as it would without us.
    """
    rng = np.random.default_rng(seed)
    counts = parse_bad_workers(bad_workers, participants)
    config = population_config or PopulationConfig(platforms=PLATFORMS[platform])
    listeners = make_population(participants, rng, counts, config)
    index = StimulusIndex(manifest) if manifest else None
    cache = DistanceCache()
    bar = tqdm(total=participants, unit="participant", desc="simulate", disable=not progress)
    judgments = 0
    meta = {"seed": seed, "slug": slug, "url": url}
    # The record is written as the run goes: truth (listeners' parameters) before the
    # crowd starts, each participant's answers as soon as they finish, the summary at the
    # end even when the server is gone by then (fetching its stats then fails softly).
    answers_handle = None
    truth_path: Path | None = None
    if out_dir is None and truth_out is not None:
        out_dir = Path(truth_out).parent
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        truth_path = Path(truth_out) if truth_out is not None else out_dir / "truth.json"
        write_truth(truth_path, build_truth(listeners, CrowdResult([], 0.0), None, cache, **meta))
        answers_handle = (out_dir / "answers.jsonl").open("w")
    answers_lock = threading.Lock()

    def answered(result, record):
        if answers_handle is not None:
            with answers_lock:
                _write_answer(answers_handle, result, record)
                answers_handle.flush()

    def done(result):
        nonlocal judgments
        judgments += result.judgments
        bar.update(1)
        bar.set_postfix(judgments=judgments, refresh=False)

    crowd = None
    stop = threading.Event()
    try:
        with _stop_on_signals(stop, echo) as caught:
            crowd = run_crowd(
                url,
                slug,
                listeners,
                concurrency=concurrency,
                cache=cache,
                index=index,
                chaos=Chaos(reload_rate, double_submit_rate),
                timeout_s=timeout_s,
                on_done=done,
                on_answer=answered,
                stop=stop,
            )
    except BaseException as error:
        if out_dir is not None:
            (out_dir / "summary.json").write_text(
                json.dumps(
                    {
                        "experiment": slug,
                        "seed": seed,
                        "interrupted": f"{type(error).__name__}: {error}",
                        "participants_finished": bar.n,
                        "judgments": judgments,
                    },
                    indent=1,
                    default=str,
                )
            )
        raise
    finally:
        bar.close()
        if answers_handle is not None:
            answers_handle.close()
    stats, stats_error = None, None
    if stats_fetcher:
        try:
            stats = stats_fetcher()
        except (Exception, SystemExit) as error:  # noqa: BLE001 - the server may be gone; keep the record
            stats_error = f"{type(error).__name__}: {error}"
            echo(f"warning: could not fetch the server's stats ({stats_error}); the record is written without them")
    summary = summarize(crowd, stats)
    if stats_error:
        summary["stats_error"] = stats_error
    if caught:
        summary["interrupted"] = caught[0]
        summary["participants_not_started"] = participants - len(crowd.participants)
    summary["experiment"] = slug
    summary["seed"] = seed
    summary["population"] = kind_counts(listeners)
    truth = build_truth(listeners, crowd, index, cache, **meta)
    summary["truth_families"] = truth.get("level_truth", {}).get("families")
    if out_dir is not None and truth_path is not None:  # set together above
        truth_path = write_truth(truth_path, truth)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        summary["truth_path"] = str(truth_path)
    echo(format_summary(summary))
    if summary.get("truth_families"):
        for family, row in sorted(summary["truth_families"].items()):
            echo(
                f"true JND ({family}): pooled midpoint {row['pooled_midpoint_level']:.1f}, "
                f"median per track {row['median_level_jnd']:.1f} (level units, {row['n_tracks']} tracks)"
            )
    if "truth_path" in summary:
        echo(f"truth: {summary['truth_path']}")
    return summary


def build_truth(
    listeners, crowd: CrowdResult, index: StimulusIndex | None, cache: DistanceCache, **meta
) -> dict[str, Any]:
    by_worker = crowd.by_worker()
    payload: dict[str, Any] = {
        "format": "jndlab-simulated-truth/1",
        **meta,
        "psychometric": "P(different|d) = gamma + (1-gamma-lambda) * (1 - 2**(-(d/threshold)**slope)), "
        "d = listening_test.simulation.auditory.AuditoryModel distance",
        "auditory_model": cache.model.config(),
        "manifest": str(index.manifest) if index else None,
        "listeners": {},
    }
    for listener in listeners:
        row = listener.to_dict()
        result = by_worker.get(listener.worker_id)
        if result is not None:
            row["outcome"] = {
                "stage": result.stage,
                "completion_code": result.completion_code,
                "judgments": result.judgments,
                "presentation_db_spl": result.presentation_db_spl,
                "tracks": sorted(f"{r}|{f}" for r, f in result.tracks),
                "errors": result.errors[:20],
            }
        payload["listeners"][listener.worker_id] = row
    if index is not None:
        listening = [
            lst
            for lst in listeners
            if lst.listens and by_worker.get(lst.worker_id) and by_worker[lst.worker_id].stage == "complete"
        ]
        truth = population_truth(
            index,
            cache,
            listening,
            tracks={w: r.tracks for w, r in by_worker.items()},
            presentation={w: r.presentation_db_spl for w, r in by_worker.items()},
        )
        payload["level_truth"] = truth
        for worker, jnds in truth["per_listener"].items():
            payload["listeners"][worker]["level_jnds"] = jnds
    return payload


@contextmanager
def _stop_on_signals(stop: threading.Event, echo: Callable[[str], Any]):
    """Within: SIGTERM/SIGINT set ``stop`` (and are listed in the yielded list) instead of
    killing the run; a repeat of the signal gets the previous handler. Only in the main
    thread (Python delivers signals there); elsewhere nothing is installed."""
    caught: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if name in caught:  # asked twice: as without us
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        caught.append(name)
        stop.set()
        echo(f"simulate: {name}: stopping; no new participants or requests, writing the record")

    for wanted in (signal.SIGTERM, signal.SIGINT):
        previous[wanted] = signal.signal(wanted, handler)
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def write_answers(path: Path, crowd: CrowdResult) -> None:
    with path.open("w") as handle:
        for p in crowd.participants:
            _append_answers(handle, p)


def _append_answers(handle, p) -> None:
    for a in p.answers:
        _write_answer(handle, p, a)
    handle.flush()


def _write_answer(handle, p, a) -> None:
    handle.write(json.dumps({"worker_id": p.worker_id, "kind": p.kind, **a.__dict__}) + "\n")
