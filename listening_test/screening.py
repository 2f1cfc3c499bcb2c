"""Worker screening: the one definition of who is excluded from a study's data, and why.

The admin dashboard and exports (``listening_test.stats``, ``listening_test.export``)
and the offline analysis (``analysis.screening``, which the model trainer calls) all
apply these rules through ``worker_statistics`` and ``judge``, so a worker flagged on
the dashboard is exactly a worker the analysis report excludes. Pure Python: no Flask,
no database, no pandas (``analysis`` may import ``listening_test``, never the reverse).

A worker is one (experiment, platform, worker id); all of a worker's sessions are
pooled, because exclusion is a decision about a person. Statistics per worker:

- catch accuracy over both same/different catch kinds (identical and obvious pairs);
- false-alarm rate: "different" on identical pairs (``catch_identical``);
- lapse rate: "same" on obvious pairs (``catch_obvious``, the top rung);
- headphone screen: failed if any session failed it;
- median response time on pair trials (too fast = not listening);
- playback: share of pair trials where some clip was played fewer than
  ``min_plays_per_clip`` times (the front end may not enforce full playback).

A rule that cannot be evaluated (too few catch trials, say) does not exclude; the
notes say so. The thresholds' defaults follow common crowdsourced-listening practice
(catch accuracy >= 75 %, e.g. ITU-T P.808's "gold questions"; the headphone screens
of Woods et al. 2017 and Milne et al. 2021, see ``headphone.py``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PAIR_KINDS = ("main", "practice", "catch_identical", "catch_obvious")
CATCH_KINDS = ("catch_identical", "catch_obvious")
# The statistics ``worker_statistics`` returns, in the order reports print them.
STAT_FIELDS = (
    "n_sessions",
    "n_judgments",
    "n_main",
    "p_different_main",
    "n_catch",
    "n_catch_correct",
    "catch_accuracy",
    "n_identical",
    "n_false_alarms",
    "false_alarm_rate",
    "n_obvious",
    "n_lapses",
    "lapse_rate",
    "headphone_passed",
    "median_rt_ms",
    "underplayed_fraction",
    "first_answer",
    "last_answer",
)


@dataclass(frozen=True)
class ScreeningRules:
    """Exclusion thresholds. ``None`` switches a rule off.

    Raises:
        ValueError: a rate outside [0, 1] or a negative count.
    """

    min_catch_accuracy: float | None = 0.75  # correct / catch trials (both kinds)
    max_false_alarm_rate: float | None = 0.5  # "different" on identical pairs
    max_lapse_rate: float | None = 0.25  # "same" on obvious pairs
    min_catch_trials: int = 4  # fewer: the catch rules above are not applied
    require_headphone_screen: bool = True  # exclude workers who failed a headphone screen
    min_median_rt_ms: float | None = 200.0  # median response time on pair trials
    max_median_rt_ms: float | None = None
    min_plays_per_clip: int = 1  # every clip played at least this often ...
    max_underplayed_fraction: float | None = 0.2  # ... on all but this share of pair trials
    min_main_trials: int = 0  # fewer main trials: excluded (0 = no rule)

    def __post_init__(self):
        for name in ("min_catch_accuracy", "max_false_alarm_rate", "max_lapse_rate", "max_underplayed_fraction"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"ScreeningRules.{name} must be in [0, 1] or null, got {v!r}")
        for name in ("min_catch_trials", "min_plays_per_clip", "min_main_trials"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"ScreeningRules.{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "rules") -> ScreeningRules:
        """Raises ValueError naming ``source`` for an unknown rule."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown screening rule(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ScreeningRules:
        """Rules from a JSON object file; ValueError names the file and the problem."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{path}: rules file not found") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: rules must be a JSON object of rule -> threshold")
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        return asdict(self)


def _missing(value: Any) -> bool:
    """None, NaN, or pandas' NA (which refuses bool())."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pd.NA
        return True


def response_different(answer: Any, kind: str) -> float:
    """1.0 for "different", 0.0 for "same", NaN otherwise (screening, A/B answers)."""
    if kind == "screening" or answer not in ("same", "different"):
        return math.nan
    return 1.0 if answer == "different" else 0.0


def _rate(k: int, n: int) -> float:
    return k / n if n else math.nan


def _utc(value: Any) -> datetime | None:
    if _missing(value) or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        value = getattr(value, "to_pydatetime", lambda: None)()
        if value is None:
            return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def worker_statistics(records: Iterable[Mapping[str, Any]], min_plays_per_clip: int = 1) -> dict[str, Any]:
    """One worker's statistics (``STAT_FIELDS``) from their answered trials.

    Each record needs ``kind``, ``answer``, ``expected_answer``, ``session``,
    ``screening_passed`` (the session's verdict: True, False or None),
    ``response_time_ms``, ``min_plays`` (fewest plays of any clip; None without clips)
    and ``answered_at`` (datetime or ISO text). Missing values may be None or NaN.
    """
    n = n_main = n_catch = catch_ok = n_ident = n_fa = n_obv = n_lapse = 0
    main_diff: list[float] = []
    rts: list[float] = []
    plays: list[float] = []
    sessions: dict[Any, Any] = {}
    times: list[datetime] = []
    for r in records:
        n += 1
        kind = r["kind"]
        diff = response_different(r["answer"], kind)
        expected = r["expected_answer"]
        expected_diff = (1.0 if expected == "different" else 0.0) if expected in ("same", "different") else math.nan
        if kind == "main":
            n_main += 1
            if not math.isnan(diff):
                main_diff.append(diff)
        if kind in CATCH_KINDS and not math.isnan(diff):
            n_catch += 1
            catch_ok += int(diff == expected_diff)
            if kind == "catch_identical":
                n_ident += 1
                n_fa += int(diff)
            else:
                n_obv += 1
                n_lapse += int(diff == 0.0)
        if kind in PAIR_KINDS:
            if not _missing(r["response_time_ms"]):
                rts.append(float(r["response_time_ms"]))
            if not _missing(r["min_plays"]):
                plays.append(float(r["min_plays"]))
        sessions.setdefault(r["session"], r["screening_passed"])
        t = _utc(r["answered_at"])
        if t is not None:
            times.append(t)
    verdicts = [v for v in sessions.values() if not _missing(v)]
    headphone = (
        False
        if any(v is False or v == False for v in verdicts)  # noqa: E712 - numpy bools are not `False`
        else (True if verdicts else None)
    )
    return {
        "n_sessions": len(sessions),
        "n_judgments": n,
        "n_main": n_main,
        "p_different_main": statistics.fmean(main_diff) if main_diff else math.nan,
        "n_catch": n_catch,
        "n_catch_correct": catch_ok,
        "catch_accuracy": _rate(catch_ok, n_catch),
        "n_identical": n_ident,
        "n_false_alarms": n_fa,
        "false_alarm_rate": _rate(n_fa, n_ident),
        "n_obvious": n_obv,
        "n_lapses": n_lapse,
        "lapse_rate": _rate(n_lapse, n_obv),
        "headphone_passed": headphone,
        "median_rt_ms": float(statistics.median(rts)) if rts else math.nan,
        "underplayed_fraction": (sum(p < min_plays_per_clip for p in plays) / len(plays)) if plays else math.nan,
        "first_answer": min(times).strftime("%Y-%m-%dT%H:%M:%SZ") if times else "",
        "last_answer": max(times).strftime("%Y-%m-%dT%H:%M:%SZ") if times else "",
    }


def judge(stats: Mapping[str, Any], rules: ScreeningRules) -> tuple[bool, list[str], list[str]]:
    """(excluded, reasons, notes) for one worker's ``worker_statistics``.

    ``reasons`` say why a worker is excluded (empty when kept); ``notes`` name the
    rules that could not be judged (too few catch trials, no headphone screen).
    """
    why: list[str] = []
    note: list[str] = []

    def finite(x) -> bool:
        return not _missing(x) and math.isfinite(float(x))

    if rules.min_catch_accuracy is not None:
        if stats["n_catch"] < rules.min_catch_trials:
            note.append(f"catch accuracy not judged ({stats['n_catch']} catch trials < {rules.min_catch_trials})")
        elif stats["catch_accuracy"] < rules.min_catch_accuracy:
            why.append(
                f"catch accuracy {stats['catch_accuracy']:.2f} < {rules.min_catch_accuracy:g} "
                f"({stats['n_catch_correct']}/{stats['n_catch']})"
            )
    enough = max(1, rules.min_catch_trials // 2)
    # (rule's name, its maximum, rate, errors, trials, what the trials are, what an error is)
    for name, top, rate, errors, trials, pairs, wrong in (
        (
            "false-alarm rate",
            rules.max_false_alarm_rate,
            "false_alarm_rate",
            "n_false_alarms",
            "n_identical",
            "identical pairs",
            "called different",
        ),
        ("lapse rate", rules.max_lapse_rate, "lapse_rate", "n_lapses", "n_obvious", "obvious pairs", "called same"),
    ):
        if top is None:
            continue
        if stats[trials] < enough:
            note.append(f"{name} not judged ({stats[trials]} {pairs})")
        elif stats[rate] > top:
            why.append(f"{name} {stats[rate]:.2f} > {top:g} ({stats[errors]}/{stats[trials]} {pairs} {wrong})")
    if rules.require_headphone_screen:
        passed = stats["headphone_passed"]
        if _missing(passed):
            note.append("no headphone screen recorded")
        elif not passed:
            why.append("failed the headphone screen")
    rt = stats["median_rt_ms"]
    if finite(rt):
        if rules.min_median_rt_ms is not None and rt < rules.min_median_rt_ms:
            why.append(f"median response time {rt:.0f} ms < {rules.min_median_rt_ms:g} ms")
        if rules.max_median_rt_ms is not None and rt > rules.max_median_rt_ms:
            why.append(f"median response time {rt:.0f} ms > {rules.max_median_rt_ms:g} ms")
    under = stats["underplayed_fraction"]
    if rules.max_underplayed_fraction is not None and finite(under) and under > rules.max_underplayed_fraction:
        why.append(
            f"{under:.0%} of pair trials had a clip played fewer than "
            f"{rules.min_plays_per_clip} time(s) (> {rules.max_underplayed_fraction:.0%})"
        )
    if rules.min_main_trials and stats["n_main"] < rules.min_main_trials:
        why.append(f"only {stats['n_main']} main trials (< {rules.min_main_trials})")
    return bool(why), why, note


def screen_workers(
    records: Iterable[Mapping[str, Any]], rules: ScreeningRules | None = None
) -> dict[str, dict[str, Any]]:
    """Group records by their ``worker`` key and judge each: worker -> stats + verdict.

    Each value holds ``STAT_FIELDS`` plus ``excluded`` (bool), ``reasons`` and ``notes``
    (lists of text).
    """
    rules = rules or ScreeningRules()
    by_worker: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_worker.setdefault(r["worker"], []).append(r)
    out = {}
    for worker, rows in by_worker.items():
        stats = worker_statistics(rows, rules.min_plays_per_clip)
        excluded, reasons, notes = judge(stats, rules)
        out[worker] = {**stats, "excluded": excluded, "reasons": reasons, "notes": notes}
    return out
