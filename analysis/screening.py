"""Worker screening: per-worker quality statistics and configurable exclusion rules.

Input: the tidy judgment table of ``analysis.judgments`` (one row per answered
trial). A worker is one (experiment, platform, worker id); all of a worker's
sessions are pooled, because exclusion is a decision about a person.

Statistics per worker:
- catch accuracy over both catch kinds;
- false-alarm rate: "different" on identical pairs (catch_identical);
- lapse estimate: "same" on obvious pairs (catch_obvious, the top rung), i.e. the
  rate of answers that ignore the sound;
- headphone screen: failed if any session failed it;
- median response time on pair trials (too fast = not listening);
- playback: share of pair trials where some clip was played fewer than the
  required times (the front end records but does not enforce full playback).

A rule that cannot be evaluated (no catch trials, say) does not exclude; the
``notes`` column says so. ``screen()`` and ``included_judgments()`` are what the
model trainer calls.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

PAIR_KINDS = ("main", "practice", "catch_identical", "catch_obvious")
WORKER_KEYS = ["experiment_id", "worker"]


@dataclass(frozen=True)
class ScreeningRules:
    """Exclusion thresholds. ``None`` switches a rule off."""

    min_catch_accuracy: float | None = 0.75      # correct / catch trials (both kinds)
    max_false_alarm_rate: float | None = 0.5     # "different" on identical pairs
    max_lapse_rate: float | None = 0.25          # "same" on obvious pairs
    min_catch_trials: int = 4                    # fewer: the catch rules above are not applied
    require_headphone_screen: bool = True        # exclude workers who failed a headphone screen
    min_median_rt_ms: float | None = 200.0       # median response time on pair trials
    max_median_rt_ms: float | None = None
    min_plays_per_clip: int = 1                  # every clip played at least this often ...
    max_underplayed_fraction: float | None = 0.2  # ... on all but this share of pair trials
    min_main_trials: int = 0                     # fewer main trials: excluded (0 = no rule)

    def __post_init__(self):
        for name in ("min_catch_accuracy", "max_false_alarm_rate", "max_lapse_rate", "max_underplayed_fraction"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"ScreeningRules.{name} must be in [0, 1] or null, got {v!r}")
        for name in ("min_catch_trials", "min_plays_per_clip", "min_main_trials"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"ScreeningRules.{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: dict, source: str = "rules") -> "ScreeningRules":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown screening rule(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "ScreeningRules":
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


# ----------------------------------------------------------------------------- CLI glue


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rules FILE`` plus one ``--<rule>`` flag per field (flags override the file)."""
    parser.add_argument("--rules", help="JSON file of screening rules (see analysis.screening.ScreeningRules)")
    for f in fields(ScreeningRules):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool",):
            parser.add_argument(flag, dest=f"rule_{f.name}", type=_parse_bool, default=None, metavar="true|false",
                                help=f"(default {f.default})")
        else:
            parser.add_argument(flag, dest=f"rule_{f.name}", type=_parse_optional_number, default=None,
                                metavar="N|none", help=f"(default {f.default})")


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_optional_number(text: str):
    if text.lower() in ("none", "null", "off"):
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def rules_from_args(args: argparse.Namespace) -> ScreeningRules:
    base = ScreeningRules.from_json(args.rules) if getattr(args, "rules", None) else ScreeningRules()
    updates = {}
    for f in fields(ScreeningRules):
        v = getattr(args, f"rule_{f.name}", None)
        if v is None:
            continue
        if v == "none":
            v = None
        elif f.type == "int":
            v = int(v)
        updates[f.name] = v
    return ScreeningRules.from_dict({**base.to_dict(), **updates})


# ----------------------------------------------------------------------------- statistics


def _rate(k: int, n: int) -> float:
    return k / n if n else math.nan


def worker_stats(df: pd.DataFrame, rules: ScreeningRules) -> pd.DataFrame:
    """Per-worker statistics (no decisions). One row per (experiment_id, worker)."""
    rows = []
    for (exp_id, worker), g in df.groupby(WORKER_KEYS, sort=True):
        kind = g["kind"]
        resp = g["response_different"]
        catch = g[kind.isin(("catch_identical", "catch_obvious")) & resp.notna()]
        ident = g[(kind == "catch_identical") & resp.notna()]
        obvious = g[(kind == "catch_obvious") & resp.notna()]
        pairs = g[kind.isin(PAIR_KINDS)]
        catch_ok = int((catch["response_different"] == catch["expected_different"]).sum())
        passed = g.drop_duplicates("session")["screening_passed"]
        if (passed == False).any():  # noqa: E712 - nullable boolean
            headphone = False
        elif (passed == True).any():  # noqa: E712
            headphone = True
        else:
            headphone = None
        rt = pairs["response_time_ms"].dropna().to_numpy(float)
        min_plays = pairs["min_plays"].dropna().to_numpy(float)
        n_main = int((kind == "main").sum())
        main_resp = g.loc[kind == "main", "response_different"].dropna()
        times = pd.to_datetime(g["answered_at"], utc=True, errors="coerce")
        rows.append(dict(
            experiment_id=exp_id, worker=worker, platform=g["platform"].iloc[0], worker_id=g["worker_id"].iloc[0],
            n_sessions=int(g["session"].nunique()), n_judgments=len(g), n_main=n_main,
            p_different_main=float(main_resp.mean()) if len(main_resp) else math.nan,
            n_catch=len(catch), n_catch_correct=catch_ok, catch_accuracy=_rate(catch_ok, len(catch)),
            n_identical=len(ident), n_false_alarms=int(ident["response_different"].sum()),
            false_alarm_rate=_rate(int(ident["response_different"].sum()), len(ident)),
            n_obvious=len(obvious), n_lapses=int((obvious["response_different"] == 0).sum()),
            lapse_rate=_rate(int((obvious["response_different"] == 0).sum()), len(obvious)),
            headphone_passed=headphone,
            median_rt_ms=float(np.median(rt)) if rt.size else math.nan,
            underplayed_fraction=float(np.mean(min_plays < rules.min_plays_per_clip)) if min_plays.size else math.nan,
            first_answer=times.min().strftime("%Y-%m-%dT%H:%M:%SZ") if times.notna().any() else "",
            last_answer=times.max().strftime("%Y-%m-%dT%H:%M:%SZ") if times.notna().any() else "",
        ))
    cols = ["experiment_id", "worker", "platform", "worker_id", "n_sessions", "n_judgments", "n_main",
            "p_different_main", "n_catch", "n_catch_correct", "catch_accuracy", "n_identical", "n_false_alarms",
            "false_alarm_rate", "n_obvious", "n_lapses", "lapse_rate", "headphone_passed", "median_rt_ms",
            "underplayed_fraction", "first_answer", "last_answer"]
    return pd.DataFrame(rows, columns=cols)


def decide(stats: pd.DataFrame, rules: ScreeningRules) -> pd.DataFrame:
    """Add ``excluded``, ``reasons`` and ``notes`` to a ``worker_stats`` table (pure)."""
    excluded, reasons, notes = [], [], []
    for r in stats.itertuples(index=False):
        why, note = [], []
        catch_ok = r.n_catch >= rules.min_catch_trials
        if rules.min_catch_accuracy is not None:
            if not catch_ok:
                note.append(f"catch accuracy not judged ({r.n_catch} catch trials < {rules.min_catch_trials})")
            elif r.catch_accuracy < rules.min_catch_accuracy:
                why.append(f"catch accuracy {r.catch_accuracy:.2f} < {rules.min_catch_accuracy:g} "
                           f"({r.n_catch_correct}/{r.n_catch})")
        if rules.max_false_alarm_rate is not None:
            if r.n_identical < max(1, rules.min_catch_trials // 2):
                note.append(f"false-alarm rate not judged ({r.n_identical} identical pairs)")
            elif r.false_alarm_rate > rules.max_false_alarm_rate:
                why.append(f"false-alarm rate {r.false_alarm_rate:.2f} > {rules.max_false_alarm_rate:g} "
                           f"({r.n_false_alarms}/{r.n_identical} identical pairs called different)")
        if rules.max_lapse_rate is not None:
            if r.n_obvious < max(1, rules.min_catch_trials // 2):
                note.append(f"lapse rate not judged ({r.n_obvious} obvious pairs)")
            elif r.lapse_rate > rules.max_lapse_rate:
                why.append(f"lapse rate {r.lapse_rate:.2f} > {rules.max_lapse_rate:g} "
                           f"({r.n_lapses}/{r.n_obvious} obvious pairs called same)")
        if rules.require_headphone_screen:
            if r.headphone_passed is False:
                why.append("failed the headphone screen")
            elif r.headphone_passed is None or pd.isna(r.headphone_passed):
                note.append("no headphone screen recorded")
        if np.isfinite(r.median_rt_ms):
            if rules.min_median_rt_ms is not None and r.median_rt_ms < rules.min_median_rt_ms:
                why.append(f"median response time {r.median_rt_ms:.0f} ms < {rules.min_median_rt_ms:g} ms")
            if rules.max_median_rt_ms is not None and r.median_rt_ms > rules.max_median_rt_ms:
                why.append(f"median response time {r.median_rt_ms:.0f} ms > {rules.max_median_rt_ms:g} ms")
        if rules.max_underplayed_fraction is not None and np.isfinite(r.underplayed_fraction) \
                and r.underplayed_fraction > rules.max_underplayed_fraction:
            why.append(f"{r.underplayed_fraction:.0%} of pair trials had a clip played fewer than "
                       f"{rules.min_plays_per_clip} time(s) (> {rules.max_underplayed_fraction:.0%})")
        if rules.min_main_trials and r.n_main < rules.min_main_trials:
            why.append(f"only {r.n_main} main trials (< {rules.min_main_trials})")
        excluded.append(bool(why))
        reasons.append("; ".join(why))
        notes.append("; ".join(note))
    out = stats.copy()
    out["excluded"] = pd.array(excluded, dtype=bool)
    out["reasons"] = reasons
    out["notes"] = notes
    return out


def screen(judgments: pd.DataFrame, rules: ScreeningRules | None = None) -> pd.DataFrame:
    """Per-worker table: statistics, ``excluded`` (bool), ``reasons`` and ``notes`` (text)."""
    rules = rules or ScreeningRules()
    missing = {"experiment_id", "worker", "kind", "response_different", "expected_different", "session",
               "screening_passed", "response_time_ms", "min_plays", "answered_at"} - set(judgments.columns)
    if missing:
        raise ValueError(f"screen: judgment table lacks columns {sorted(missing)} (use analysis.judgments.load_judgments)")
    return decide(worker_stats(judgments, rules), rules)


def included_judgments(judgments: pd.DataFrame, rules: ScreeningRules | None = None,
                       screened: pd.DataFrame | None = None) -> pd.DataFrame:
    """The judgments of workers that ``screen`` keeps (pass ``screened`` to reuse a table)."""
    screened = screen(judgments, rules) if screened is None else screened
    keep = screened.loc[~screened["excluded"], WORKER_KEYS]
    merged = judgments.merge(keep.assign(_keep=True), on=WORKER_KEYS, how="left")
    return judgments[merged["_keep"].fillna(False).to_numpy(bool)]
