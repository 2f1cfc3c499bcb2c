"""Drive the real server over HTTP with virtual listeners, as the browser front end does.

One ``requests.Session`` per participant (its own cookie jar), a thread pool for
concurrency. Each participant: MTurk preview (for MTurk workers), landing with the
platform's URL parameters, consent, volume (fetch the calibration clip and set the
level from it), headphone screening (fetch the three stereo intervals, decide with
``ear.py``), instructions, practice and main trials (fetch both clips, decode, compute
the auditory-model distance, answer), completion. Every request is bounded (timeouts,
a step limit, a few retries on connection errors; answers are idempotent server-side).

``Chaos`` adds what real browsers do: a reload (``GET /api/session``) that must return
the same open trial, and a double-clicked answer that must come back ``duplicate``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

from .auditory import DEFAULT_FULL_SCALE_DB_SPL, DistanceCache, decode_wav
from .ear import screening_choice
from .listener import KINDS, ListenerParams
from .truth import StimulusIndex

MAX_STEPS = 5000
RETRIES = 3
PATIENCE_S = 20.0  # keep retrying a request this long (server restarts, busy databases)
# A 429 is not a fault: the server's rate limit (LANDING_RATE_LIMIT, per client address,
# a 60 s moving window by default) says when to come back. A simulated crowd shares one
# address, so it waits the full Retry-After (at most RATE_LIMIT_MAX_WAIT_S a time) for up
# to RATE_LIMIT_PATIENCE_S in all before it gives up.
RATE_LIMIT_MAX_WAIT_S = 65.0
RATE_LIMIT_PATIENCE_S = 300.0
CLIENT_INFO = {"user_agent": "jndlab-simulator/1", "screen": "1280x800", "simulated": True}


class SimulationError(RuntimeError):
    """A participant could not go on (unexpected status, broken contract)."""


@dataclass
class Chaos:
    reload_probability: float = 0.0  # GET /api/session before answering
    double_submit_probability: float = 0.0  # post the same answer twice


@dataclass
class AnswerRecord:
    trial_id: int
    phase: str
    answer: str
    duplicate: bool
    distance: float | None = None
    family: str | None = None
    reference: str | None = None
    level: float | None = None
    ab_distances: tuple[float, float] | None = None  # A/B trials: (d(reference, A), d(reference, B))


@dataclass
class ParticipantResult:
    worker_id: str
    kind: str
    platform: str
    stage: str = "not_started"
    completion_code: str | None = None
    completion: dict | None = None
    answers: list[AnswerRecord] = field(default_factory=list)
    served_trial_ids: list[int] = field(default_factory=list)
    audio_fetches: int = 0
    presentation_db_spl: float = DEFAULT_FULL_SCALE_DB_SPL
    tracks: set[tuple[str, str]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    contract_violations: list[str] = field(default_factory=list)
    http_status: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def judgments(self) -> int:
        return sum(1 for a in self.answers if a.phase == "main" and not a.duplicate)


class Interrupted(Exception):
    """The run was told to stop (``stop`` event set: SIGTERM/SIGINT); not a failure."""


class SimulatedParticipant:
    def __init__(
        self,
        base_url: str,
        slug: str,
        listener: ListenerParams,
        cache: DistanceCache,
        index: StimulusIndex | None = None,
        chaos: Chaos | None = None,
        timeout_s: float = 30.0,
        on_answer: Callable[[ParticipantResult, AnswerRecord], None] | None = None,
        stop: threading.Event | None = None,
    ):
        self.base = base_url.rstrip("/")
        self.slug = slug
        self.listener = listener
        self.cache = cache
        self.index = index
        self.chaos = chaos or Chaos()
        self.timeout = timeout_s
        self.patience_s = PATIENCE_S
        self.rng = np.random.default_rng(listener.seed)
        self.http = requests.Session()
        self.token: str | None = None
        self._attempts = 0
        self.csrf: str | None = None
        self.result = ParticipantResult(listener.worker_id, listener.kind, listener.platform)
        self._answered: set[int] = set()
        self.on_answer = on_answer  # called with each answer as the server acknowledges it
        self.stop = stop or threading.Event()

    def _acknowledged(self, record: AnswerRecord) -> None:
        self.result.answers.append(record)
        if self.on_answer is not None:
            self.on_answer(self.result, record)

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Interrupted("stopped while waiting to retry")

    # -- HTTP ------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["X-Session-Token"] = self.token
        if method == "POST" and self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        last: Exception | None = None
        self._attempts = 0
        started = time.monotonic()
        attempt = 0
        # Like the page: retry lost connections, 5xx and 429 with exponential back-off (at
        # most 2 s a wait, Retry-After when the server says), at least RETRIES tries and
        # for up to ``patience_s`` (a server restart takes a few seconds).
        limited_s = 0.0  # time spent waiting out 429s: it does not use up ``patience_s``
        while True:
            if self.stop.is_set():
                raise Interrupted(f"stopped before {method} {path.split('?')[0]}")
            self._attempts = attempt + 1
            more = attempt + 1 < RETRIES or time.monotonic() - started - limited_s < self.patience_s
            wait = min(2.0, 0.2 * 2**attempt)
            try:
                r = self.http.request(method, self.base + path, headers=headers, timeout=self.timeout, **kwargs)
                self.result.http_status[r.status_code] += 1
                after = r.headers.get("Retry-After", "")
                if r.status_code == 429 and limited_s < RATE_LIMIT_PATIENCE_S:
                    pause = min(float(after) if after.isdigit() else wait, RATE_LIMIT_MAX_WAIT_S)
                    self.result.errors.append(f"{method} {path.split('?')[0]}: 429, waited {pause:.0f} s")
                    self._sleep(pause)
                    limited_s += pause
                    attempt += 1
                    continue
                if r.status_code >= 500 and more:
                    self.result.errors.append(f"{method} {path.split('?')[0]}: {r.status_code}, retried")
                    self._sleep(min(float(after), 5.0) if after.isdigit() else wait)
                    attempt += 1
                    continue
                return r
            except requests.RequestException as error:
                last = error
                if not more:
                    break
                self.result.errors.append(f"{method} {path.split('?')[0]}: {error.__class__.__name__}, retried")
                self._sleep(wait)
                attempt += 1
        raise SimulationError(f"{method} {path}: gave up after {self._attempts} attempts ({last})")

    def _json(self, r: requests.Response, expect: tuple[int, ...]) -> dict:
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code not in expect:
            err = (body or {}).get("error", {})
            raise SimulationError(
                f"{r.request.method} {r.request.path_url}: {r.status_code} "
                f"{err.get('code', '')} {err.get('message', r.text[:200])}".strip()
            )
        return body

    def _post(self, path: str, body: dict, expect=(200,)) -> dict:
        return self._json(self._request("POST", path, json=body), expect)

    def _audio(self, url: str) -> bytes:
        r = self._request("GET", url)
        if r.status_code != 200:
            raise SimulationError(f"GET {url}: {r.status_code}")
        self.result.audio_fetches += 1
        return r.content

    # -- the flow --------------------------------------------------------------------

    def land(self) -> dict:
        self._json(self._request("GET", f"/api/experiments/{self.slug}"), (200,))
        params = dict(self.listener.platform_ids)
        if self.listener.platform == "mturk":
            preview = self._post(
                f"/api/experiments/{self.slug}/sessions",
                {"params": {**params, "assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE"}, "client": CLIENT_INFO},
                expect=(200,),
            )
            if not preview.get("preview"):
                self.result.contract_violations.append("MTurk preview landing did not answer preview=true")
        body = self._post(
            f"/api/experiments/{self.slug}/sessions", {"params": params, "client": CLIENT_INFO}, expect=(200, 201)
        )
        self.token, self.csrf = body["session_token"], body["csrf_token"]
        return body["state"]

    def run(self) -> ParticipantResult:
        start = time.perf_counter()
        try:
            state = self.land()
            for _ in range(MAX_STEPS):
                stage = state["stage"]
                self.result.stage = stage
                if stage in ("complete", "screened_out"):
                    self._finish(state)
                    break
                state = self._step(state)
            else:
                raise SimulationError(f"no end after {MAX_STEPS} steps")
        except Interrupted as error:
            self.result.errors.append(f"interrupted: {error}")
        except SimulationError as error:
            self.result.errors.append(f"fatal: {error}")
        except Exception as error:  # noqa: BLE001 - one participant's bug must not stop the crowd
            self.result.errors.append(f"fatal: {error.__class__.__name__}: {error}")
        finally:
            self.http.close()
            self.result.seconds = time.perf_counter() - start
        return self.result

    def _step(self, state: dict) -> dict:
        stage = state["stage"]
        if stage == "consent":
            return self._post("/api/session/consent", {"consent": True})["state"]
        if stage == "volume":
            self._set_volume(state)
            return self._post("/api/session/volume", {})["state"]
        if stage == "instructions":
            return self._post("/api/session/instructions", {})["state"]
        if stage in ("screening", "practice", "main"):
            trial = state.get("trial")
            if trial is None:
                raise SimulationError(f"stage {stage} without a trial")
            return self._trial(trial)
        raise SimulationError(f"unknown stage {stage!r}")

    def _set_volume(self, state: dict) -> None:
        """Play the calibration clip and turn the volume until it sits at the preferred level."""
        if not self.listener.plays_audio:
            return
        clips = (state.get("volume") or {}).get("clips") or []
        if not clips:
            return
        audio, _ = decode_wav(self._audio(clips[0]["url"]))
        rms = float(np.sqrt(np.mean(np.asarray(audio, np.float64) ** 2)))
        if rms > 0:
            self.result.presentation_db_spl = self.listener.listening_level_db_spl - 20.0 * math.log10(rms)

    def _trial(self, trial: dict) -> dict:
        tid = int(trial["id"])
        if tid in self._answered:
            self.result.contract_violations.append(f"trial {tid} served again after it was answered")
            raise SimulationError(f"trial {tid} served twice")
        if not self.result.served_trial_ids or self.result.served_trial_ids[-1] != tid:
            self.result.served_trial_ids.append(tid)
        record = AnswerRecord(trial_id=tid, phase=trial["phase"], answer="", duplicate=False)
        if trial["phase"] == "screening":
            answer = self._screening_answer(trial)
            counts = self.listener.play_counts(len(trial["clips"]), self.rng, screening=True)
        elif trial["prompt"] == "ab_preference":
            answer = self._ab_answer(trial, record)
            counts = self.listener.play_counts(len(trial["clips"]), self.rng)
        else:
            answer = self._pair_answer(trial, record)
            counts = self.listener.play_counts(len(trial["clips"]), self.rng)
        record.answer = answer
        body = {
            "trial_id": tid,
            "nonce": trial["nonce"],
            "answer": answer,
            "response_time_ms": self.listener.response_time_ms(self.rng),
            "play_counts": counts,
            "client": {"focus_lost": 0, "simulated": True},
        }
        if self.chaos.reload_probability and self.rng.random() < self.chaos.reload_probability:
            again = self._json(self._request("GET", "/api/session"), (200,))["state"].get("trial") or {}
            if again.get("id") != tid or again.get("nonce") != trial["nonce"]:
                self.result.contract_violations.append(f"reload returned another trial than {tid}")
        r = self._request("POST", "/api/session/answer", json=body)
        if r.status_code == 409:
            # A stale view: render the server's state, as the front end does.
            self.result.errors.append(f"409 on trial {tid}")
            return self._json(self._request("GET", "/api/session"), (200,))["state"]
        retried = self._attempts > 1
        reply = self._json(r, (200,))
        if reply.get("duplicate") and not retried:
            # (After a lost reply and a retry, "duplicate" is right: the first attempt was stored.)
            self.result.contract_violations.append(f"first answer to trial {tid} acknowledged as duplicate")
        self._acknowledged(record)
        self._answered.add(tid)
        if self.chaos.double_submit_probability and self.rng.random() < self.chaos.double_submit_probability:
            twin = self._json(self._request("POST", "/api/session/answer", json=body), (200,))
            if not twin.get("duplicate"):
                self.result.contract_violations.append(f"double submit of trial {tid} not flagged duplicate")
            self._acknowledged(AnswerRecord(tid, trial["phase"], answer, True))
        return reply["state"]

    def _screening_answer(self, trial: dict) -> str:
        rng = self.rng
        if self.listener.lapse and rng.random() < self.listener.lapse:
            return str(int(rng.integers(1, len(trial["clips"]) + 1)))
        intervals = [decode_wav(self._audio(c["url"])) for c in trial["clips"]]
        pick = screening_choice(
            trial["prompt"],
            intervals,
            headphones=self.listener.has_headphones,
            rng=rng,
            noise=self.listener.screening_noise,
        )
        return trial["choices"][pick]

    def _pair_answer(self, trial: dict, record: AnswerRecord) -> str:
        if not self.listener.plays_audio:
            return self.listener.pair_answer(None, None, self.rng)
        a, b = (self._audio(c["url"]) for c in trial["clips"])
        family = None
        if self.index is not None:
            # Deliveries are dithered (unique bytes per clip): recognise each by its samples
            # and hear the stimulus it is, as population_truth measures it.
            infos = [self.index.lookup(x) for x in (a, b)]
            a, b = (i.path.read_bytes() if i is not None else x for i, x in zip(infos, (a, b)))
        distance = self.cache.distance(a, b, self.result.presentation_db_spl)
        if self.index is not None:
            test = next((i for i in infos if i is not None and i.family != "reference"), None)
            if test is not None:
                family, record.reference, record.level = test.family, test.reference, test.level
                if trial["phase"] == "main":
                    self.result.tracks.add((test.reference, test.family))
        record.distance, record.family = distance, family
        return self.listener.pair_answer(distance, family, self.rng)

    def _ab_answer(self, trial: dict, record: AnswerRecord) -> str:
        """Fetch the reference and clips A and B, and prefer the one nearer the reference."""
        if not self.listener.plays_audio:
            return self.listener.ab_answer(None, None, self.rng)
        reference, a, b = (self._audio(c["url"]) for c in trial["clips"])
        if self.index is not None:
            reference, a, b = (self.index.canonical_bytes(x) for x in (reference, a, b))
        level = self.result.presentation_db_spl
        d_a, d_b = self.cache.distance(reference, a, level), self.cache.distance(reference, b, level)
        record.ab_distances = (d_a, d_b)
        return self.listener.ab_answer(d_a, d_b, self.rng)

    def _finish(self, state: dict) -> None:
        completion = state.get("completion")
        if not completion or not completion.get("code"):
            self.result.contract_violations.append(f"stage {state['stage']} without a completion code")
            return
        self.result.completion = completion
        self.result.completion_code = completion["code"]
        if self.listener.platform == "mturk":
            fields = (completion.get("mturk") or {}).get("fields") or {}
            if fields.get("assignmentId") != self.listener.platform_ids.get("assignmentId"):
                self.result.contract_violations.append("MTurk form does not carry this assignmentId")


# -- the crowd --------------------------------------------------------------------------


@dataclass
class CrowdResult:
    participants: list[ParticipantResult]
    seconds: float
    cache_hits: int = 0
    cache_misses: int = 0

    def by_worker(self) -> dict[str, ParticipantResult]:
        return {p.worker_id: p for p in self.participants}


def run_crowd(
    base_url: str,
    slug: str,
    listeners: list[ListenerParams],
    *,
    concurrency: int = 4,
    cache: DistanceCache | None = None,
    index: StimulusIndex | None = None,
    chaos: Chaos | None = None,
    timeout_s: float = 30.0,
    on_done: Callable[[ParticipantResult], None] | None = None,
    on_answer: Callable[[ParticipantResult, AnswerRecord], None] | None = None,
    stop: threading.Event | None = None,
) -> CrowdResult:
    """Run every listener through the study, ``concurrency`` at a time.

    ``on_answer(result, record)`` is called (from the listener's thread) with each answer
    the server acknowledged, as it is acknowledged. Once ``stop`` is set no participant
    starts, running ones stop before their next request (a request in flight finishes,
    so its answer is either acknowledged and reported or never sent), and the crowd
    returns with what it has."""
    stop = stop or threading.Event()
    cache = cache or DistanceCache()
    start = time.perf_counter()
    results: list[ParticipantResult | None] = [None] * len(listeners)
    lock = threading.Lock()

    def one(i: int) -> tuple[int, ParticipantResult | None]:
        if stop.is_set():
            return i, None  # never started
        p = SimulatedParticipant(
            base_url, slug, listeners[i], cache, index, chaos, timeout_s, on_answer=on_answer, stop=stop
        )
        return i, p.run()

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="listener") as pool:
        futures = [pool.submit(one, i) for i in range(len(listeners))]
        for future in as_completed(futures):
            i, result = future.result()
            if result is None:
                continue
            with lock:
                results[i] = result
            if on_done is not None:
                on_done(result)
    return CrowdResult([r for r in results if r is not None], time.perf_counter() - start, cache.hits, cache.misses)


def summarize(crowd: CrowdResult, stats: dict | None = None) -> dict[str, Any]:
    """Counts per kind; catch-trial accuracy per kind from the admin stats (if given)."""
    per_kind: dict[str, dict[str, Any]] = {}
    catch = {}
    if stats:
        for w in stats.get("workers", []):
            catch[w.get("worker_id")] = (w.get("catch_trials") or 0, w.get("catch_correct") or 0)
    groups: dict[str, list[ParticipantResult]] = defaultdict(list)
    for p in crowd.participants:
        groups[p.kind].append(p)
    for kind in KINDS:
        ps = groups.get(kind, [])
        if not ps:
            continue
        n_catch = sum(catch.get(p.worker_id, (0, 0))[0] for p in ps)
        n_ok = sum(catch.get(p.worker_id, (0, 0))[1] for p in ps)
        per_kind[kind] = {
            "participants": len(ps),
            "complete": sum(p.stage == "complete" for p in ps),
            "screened_out": sum(p.stage == "screened_out" for p in ps),
            "judgments": sum(p.judgments for p in ps),
            "audio_fetches": sum(p.audio_fetches for p in ps),
            "catch_trials": n_catch if stats else None,
            "catch_accuracy": (n_ok / n_catch if n_catch else None) if stats else None,
        }
    return {
        "participants": len(crowd.participants),
        "complete": sum(p.stage == "complete" for p in crowd.participants),
        "screened_out": sum(p.stage == "screened_out" for p in crowd.participants),
        "unfinished": sum(p.stage not in ("complete", "screened_out") for p in crowd.participants),
        "judgments": sum(p.judgments for p in crowd.participants),
        "answers_acknowledged": sum(not a.duplicate for p in crowd.participants for a in p.answers),
        "errors": sum(len(p.errors) for p in crowd.participants),
        "fatal_errors": [e for p in crowd.participants for e in p.errors if e.startswith("fatal")],
        "contract_violations": [v for p in crowd.participants for v in p.contract_violations],
        # Every reply by status code ("429": rate-limited and waited out, "503": retried).
        "http_status": {
            str(code): n for code, n in sorted(sum((p.http_status for p in crowd.participants), Counter()).items())
        },
        "seconds": round(crowd.seconds, 2),
        "distance_cache": {"hits": crowd.cache_hits, "misses": crowd.cache_misses},
        "per_kind": per_kind,
    }


def format_summary(summary: dict) -> str:
    lines = [
        f"participants: {summary['participants']}  complete: {summary['complete']}  "
        f"screened out: {summary['screened_out']}  unfinished: {summary['unfinished']}",
        f"judgments (main, incl. catch): {summary['judgments']}  answers acknowledged: "
        f"{summary['answers_acknowledged']}  in {summary['seconds']:.1f} s",
        f"errors: {summary['errors']} ({len(summary['fatal_errors'])} fatal)  contract violations: "
        f"{len(summary['contract_violations'])}",
        f"{'kind':<15}{'n':>4}{'complete':>10}{'screened':>10}{'judgm.':>8}{'catch n':>9}{'catch acc':>11}",
    ]
    for kind, row in summary["per_kind"].items():
        acc = "n/a" if row["catch_accuracy"] is None else f"{row['catch_accuracy']:.2f}"
        n_catch = "n/a" if row["catch_trials"] is None else str(row["catch_trials"])
        lines.append(
            f"{kind:<15}{row['participants']:>4}{row['complete']:>10}{row['screened_out']:>10}"
            f"{row['judgments']:>8}{n_catch:>9}{acc:>11}"
        )
    for error in summary["fatal_errors"][:10]:
        lines.append(f"  fatal: {error}")
    for violation in summary["contract_violations"][:10]:
        lines.append(f"  contract: {violation}")
    return "\n".join(lines)
