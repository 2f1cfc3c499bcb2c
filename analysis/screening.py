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

A/B preference studies (``analysis.ab_judgments``) are screened by their own rules
(``ABScreeningRules``): sessions that failed the headphone screen are dropped, workers
whose accuracy on catch trials (the clean reference against the anchor, kind
``catch_anchor``) is below a threshold are excluded (workers without catch trials are
kept and flagged), and optionally so are workers who skipped playback (a main trial with
a clip played 0 times): ``screen_ab_workers`` and ``included_ab_judgments``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

# The rules and the per-worker decision live once, in listening_test.screening: the
# admin dashboard and its exports apply exactly the same definition.
from listening_test.screening import PAIR_KINDS, STAT_FIELDS, ScreeningRules, judge, worker_statistics

from .ab_judgments import ANSWERS, CATCH_KIND

__all__ = [
    "ABScreeningRules",
    "PAIR_KINDS",
    "WORKER_KEYS",
    "ScreeningRules",
    "add_rule_arguments",
    "decide",
    "failed_headphone_screen",
    "included_ab_judgments",
    "included_judgments",
    "rules_from_args",
    "screen",
    "screen_ab_workers",
    "worker_stats",
]

WORKER_KEYS = ["experiment_id", "worker"]


# ----------------------------------------------------------------------------- CLI glue


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:
    """``--rules FILE`` plus one ``--<rule>`` flag per field (flags override the file)."""
    parser.add_argument("--rules", help="JSON file of screening rules (see analysis.screening.ScreeningRules)")
    for f in fields(ScreeningRules):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool",):
            parser.add_argument(
                flag,
                dest=f"rule_{f.name}",
                type=_parse_bool,
                default=None,
                metavar="true|false",
                help=f"(default {f.default})",
            )
        else:
            parser.add_argument(
                flag,
                dest=f"rule_{f.name}",
                type=_parse_optional_number,
                default=None,
                metavar="N|none",
                help=f"(default {f.default})",
            )


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
    """The rules of ``add_rule_arguments``' options: the ``--rules`` file (or the defaults)
    with each given flag on top. Raises ValueError for an unknown or out-of-range rule
    (``ScreeningRules.from_dict``) and OSError for an unreadable rules file."""
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


def worker_stats(df: pd.DataFrame, rules: ScreeningRules) -> pd.DataFrame:
    """Per-worker statistics (no decisions). One row per (experiment_id, worker).

    Computed by ``listening_test.screening.worker_statistics``, the definition the
    dashboard uses too."""
    rows = []
    columns = [
        "kind",
        "answer",
        "expected_answer",
        "session",
        "screening_passed",
        "response_time_ms",
        "min_plays",
        "answered_at",
    ]
    for (exp_id, worker), g in df.groupby(WORKER_KEYS, sort=True):
        stats = worker_statistics(g[columns].to_dict("records"), rules.min_plays_per_clip)
        rows.append(
            dict(
                experiment_id=exp_id,
                worker=worker,
                platform=g["platform"].iloc[0],
                worker_id=g["worker_id"].iloc[0],
                **stats,
            )
        )
    cols = ["experiment_id", "worker", "platform", "worker_id", *STAT_FIELDS]
    return pd.DataFrame(rows, columns=cols)


def decide(stats: pd.DataFrame, rules: ScreeningRules) -> pd.DataFrame:
    """Add ``excluded``, ``reasons`` and ``notes`` to a ``worker_stats`` table (pure);
    the decision is ``listening_test.screening.judge``."""
    excluded, reasons, notes = [], [], []
    for r in stats.to_dict("records"):
        out, why, note = judge(r, rules)
        excluded.append(out)
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
    missing = {
        "experiment_id",
        "worker",
        "kind",
        "response_different",
        "expected_different",
        "session",
        "screening_passed",
        "response_time_ms",
        "min_plays",
        "answered_at",
    } - set(judgments.columns)
    if missing:
        raise ValueError(
            f"screen: judgment table lacks columns {sorted(missing)} (use analysis.judgments.load_judgments)"
        )
    return decide(worker_stats(judgments, rules), rules)


def included_judgments(
    judgments: pd.DataFrame, rules: ScreeningRules | None = None, screened: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The judgments of workers that ``screen`` keeps (pass ``screened`` to reuse a table)."""
    screened = screen(judgments, rules) if screened is None else screened
    keep = screened.loc[~screened["excluded"], WORKER_KEYS]
    merged = judgments.merge(keep.assign(_keep=True), on=WORKER_KEYS, how="left")
    return judgments[merged["_keep"].fillna(False).to_numpy(bool)]


# ----------------------------------------------------------------------------- A/B preference studies


@dataclass(frozen=True)
class ABScreeningRules:
    """Who is left out of an A/B study. ``min_catch_accuracy = None`` switches the catch rule off.

    Raises:
        ValueError: ``min_catch_accuracy`` outside [0, 1].
    """

    min_catch_accuracy: float | None = 0.8  # correct / catch_anchor trials
    require_headphone_screen: bool = True  # drop sessions that failed the headphone screen
    exclude_skipped_playback: bool = False  # exclude workers with a main trial where a clip was played 0 times

    def __post_init__(self):
        v = self.min_catch_accuracy
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"min_catch_accuracy must be in [0, 1] or None, got {v!r}")

    def to_dict(self) -> dict:
        """The rules as a JSON-ready dict."""
        return asdict(self)


def failed_headphone_screen(df: pd.DataFrame) -> np.ndarray:
    """Per row (N,): the row's session failed the headphone screen (unknown counts as passed)."""
    return df["screening_passed"].eq(False).fillna(False).to_numpy(bool)


def screen_ab_workers(df: pd.DataFrame, rules: ABScreeningRules | None = None) -> pd.DataFrame:
    """One row per worker of the A/B table (``analysis.ab_judgments``): catch accuracy,
    skipped playback, headphone sessions, excluded and why.

    ``reasons`` lists what excludes the worker; ``flags`` what is worth knowing but does not
    (no catch trials, skipped playback when that rule is off, some sessions dropped).
    Statistics count the sessions that passed the headphone screen (all of them when none
    did). Raises KeyError for a table without the ``AB_COLUMNS``.
    """
    rules = rules or ABScreeningRules()
    records = []
    for worker, g in df.groupby("worker", sort=True):
        failed = failed_headphone_screen(g)
        sessions = g["session"].nunique()
        failed_sessions = g.loc[failed, "session"].nunique()
        # statistics on the sessions that count; on all of them when none does (for the record)
        kept = g[~failed] if rules.require_headphone_screen and not failed.all() else g
        main = kept[kept["kind"] == "main"]
        catch = kept[kept["kind"] == CATCH_KIND]
        n_catch = len(catch)
        n_correct = int(catch["is_correct"].fillna(False).astype(bool).sum())
        accuracy = n_correct / n_catch if n_catch else math.nan
        skipped = int(main["skipped_playback"].fillna(False).astype(bool).sum())
        answered_ab = main["answer"].isin(ANSWERS)
        reasons, flags = [], []
        if rules.require_headphone_screen and failed_sessions:
            if failed_sessions == sessions:
                reasons.append("failed the headphone screen")
            else:
                flags.append(f"{failed_sessions} of {sessions} sessions failed the headphone screen (dropped)")
        if n_catch == 0:
            flags.append("no catch trials (catch rule not applied)")
        elif rules.min_catch_accuracy is not None and accuracy < rules.min_catch_accuracy:
            reasons.append(f"catch accuracy {accuracy:.2f} ({n_correct}/{n_catch}) < {rules.min_catch_accuracy:g}")
        if skipped:
            text = f"skipped playback on {skipped} of {len(main)} main trials"
            (reasons if rules.exclude_skipped_playback else flags).append(text)
        rt = pd.to_numeric(main["response_time_ms"], errors="coerce").dropna()
        records.append(
            {
                "worker": worker,
                "platform": g["platform"].iloc[0],
                "worker_id": g["worker_id"].iloc[0],
                "n_sessions": sessions,
                "n_sessions_failed_screen": failed_sessions,
                "n_main": len(main),
                "n_catch": n_catch,
                "n_catch_correct": n_correct,
                "catch_accuracy": accuracy,
                "n_skipped_playback": skipped,
                "share_answer_a": float((main.loc[answered_ab, "answer"] == "A").mean())
                if answered_ab.any()
                else math.nan,
                "median_rt_ms": float(rt.median()) if len(rt) else math.nan,
                "excluded": bool(reasons),
                "reasons": "; ".join(reasons),
                "flags": "; ".join(flags),
            }
        )
    columns = [
        "worker",
        "platform",
        "worker_id",
        "n_sessions",
        "n_sessions_failed_screen",
        "n_main",
        "n_catch",
        "n_catch_correct",
        "catch_accuracy",
        "n_skipped_playback",
        "share_answer_a",
        "median_rt_ms",
        "excluded",
        "reasons",
        "flags",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def included_ab_judgments(
    df: pd.DataFrame, rules: ABScreeningRules | None = None, workers: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The rows of included workers, without sessions that failed the headphone screen
    (unless ``rules`` keeps them); pass ``workers`` to reuse a ``screen_ab_workers`` table."""
    rules = rules or ABScreeningRules()
    workers = screen_ab_workers(df, rules) if workers is None else workers
    excluded = set(workers.loc[workers["excluded"], "worker"])
    keep = ~df["worker"].isin(excluded).to_numpy(bool)
    if rules.require_headphone_screen:
        keep &= ~failed_headphone_screen(df)
    return df[keep]
