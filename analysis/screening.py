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
from dataclasses import fields

import pandas as pd

# The rules and the per-worker decision live once, in listening_test.screening: the
# admin dashboard and its exports apply exactly the same definition.
from listening_test.screening import (
    PAIR_KINDS,
    STAT_FIELDS,
    ScreeningRules,
    judge,
    worker_statistics,
)

__all__ = [
    "PAIR_KINDS",
    "WORKER_KEYS",
    "ScreeningRules",
    "add_rule_arguments",
    "decide",
    "included_judgments",
    "rules_from_args",
    "screen",
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


def worker_stats(df: pd.DataFrame, rules: ScreeningRules) -> pd.DataFrame:
    """Per-worker statistics (no decisions). One row per (experiment_id, worker).

    Computed by ``listening_test.screening.worker_statistics``, the definition the
    dashboard uses too."""
    rows = []
    columns = ["kind", "answer", "expected_answer", "session", "screening_passed", "response_time_ms",
               "min_plays", "answered_at"]
    for (exp_id, worker), g in df.groupby(WORKER_KEYS, sort=True):
        stats = worker_statistics(g[columns].to_dict("records"), rules.min_plays_per_clip)
        rows.append(dict(experiment_id=exp_id, worker=worker, platform=g["platform"].iloc[0],
                         worker_id=g["worker_id"].iloc[0], **stats))
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
