"""Design of an A/B preference test: which pairs of systems, in which order.

Pure logic (no Flask, no database), like the adaptive procedures. An A/B track is
one (clean item, system pair) with a fixed number of presentations (``repeats``);
nothing adapts, so the only decisions are which systems are compared, and which of
the two plays as clip A. Order is counterbalanced within each participant: over a
session's presentations each system of a pair is clip A as often as clip B (within
one), so a listener's bias towards A or B cannot favour either system.

    pairs = system_pairs({"l1", "metric_l1", "noisy"}, anchor="noisy")  # [("l1", "metric_l1")]
    key = pair_key("metric_l1", "l1")                                   # "l1|metric_l1"
    order = balanced_orientations(5, rng)                               # e.g. [True, False, False, True, True]
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

PROCEDURE_NAME = "paired"
PAIR_SEPARATOR = "|"
# The clean copy's name when it plays as clip A or B (catch and practice trials).
REFERENCE_SYSTEM = "reference"
SYSTEM_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,30}$")


@dataclass(frozen=True)
class PairedConfig:
    repeats: int = 1  # presentations of each (item, pair) per participant, orders alternating

    @classmethod
    def from_dict(cls, data: Mapping | None) -> PairedConfig:
        data = dict(data or {})
        unknown = sorted(set(data) - {"repeats"})
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for procedure {PROCEDURE_NAME!r}; valid: ['repeats']")
        repeats = data.get("repeats", 1)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 20:
            raise ValueError(f"repeats must be an integer in [1, 20], got {repeats!r}")
        return cls(repeats=repeats)

    def to_dict(self) -> dict:
        return asdict(self)


def check_system_name(name: str) -> None:
    if not SYSTEM_NAME_RE.match(name) or name == REFERENCE_SYSTEM:
        raise ValueError(
            f"system name {name!r} must be 1-30 letters, digits, '_', '.' or '-', and not {REFERENCE_SYSTEM!r}"
        )


def pair_key(x: str, y: str) -> str:
    """The track name of a system pair: the two names sorted, joined by '|'."""
    if x == y:
        raise ValueError(f"a pair needs two different systems, got {x!r} twice")
    return PAIR_SEPARATOR.join(sorted((x, y)))


def split_pair_key(key: str) -> tuple[str, str]:
    x, sep, y = key.partition(PAIR_SEPARATOR)
    if not sep or not x or not y:
        raise ValueError(f"not a pair key: {key!r}")
    return x, y


def system_pairs(systems: Collection[str], anchor: str | None = None) -> list[tuple[str, str]]:
    """Every pair of the compared systems (the anchor is only for catch trials), sorted."""
    compared = sorted(set(systems) - {anchor})
    return list(itertools.combinations(compared, 2))


def check_design(
    systems_by_item: Mapping[str, Collection[str]], anchor: str | None, needs_anchor: bool
) -> list[tuple[str, str]]:
    """Validate an A/B stimulus set; return its system pairs. Raises ValueError naming the problem.

    Every item must have an output of every system (a missing output would make the
    pairs unbalanced across items), at least two systems besides the anchor, and the
    anchor when catch or practice trials need it.
    """
    if not systems_by_item:
        raise ValueError("the stimulus set has no system outputs")
    all_systems = set().union(*map(set, systems_by_item.values()))
    for name in sorted(all_systems):
        check_system_name(name)
    for item, systems in sorted(systems_by_item.items()):
        missing = sorted(all_systems - set(systems))
        if missing:
            raise ValueError(f"item {item!r} has no output of system(s) {missing}; every item needs every system")
    if anchor is not None and anchor not in all_systems:
        raise ValueError(f"anchor_system {anchor!r} is not one of the systems {sorted(all_systems)}")
    if needs_anchor and anchor is None:
        raise ValueError(
            "catch and practice trials of an A/B test compare the clean reference with an anchor "
            "system (e.g. the unprocessed noisy input): set anchor_system, or set catch_rate 0 "
            "and practice_trials 0"
        )
    pairs = system_pairs(all_systems, anchor)
    if not pairs:
        raise ValueError(
            f"an A/B test needs at least two systems besides the anchor; found {sorted(all_systems)}"
            + (f" with anchor {anchor!r}" if anchor else "")
        )
    return pairs


def balanced_orientations(n: int, rng: np.random.Generator) -> list[bool]:
    """``n`` flags "the pair's first system plays as A", half True (odd n: one extra at random), shuffled."""
    if n < 0:
        raise ValueError("n must be >= 0")
    flags = [True] * (n // 2) + [False] * (n // 2)
    if n % 2:
        flags.append(bool(rng.integers(0, 2)))
    order = rng.permutation(n)
    return [flags[i] for i in order]


def assign_orientations(n_tracks: int, repeats: int, rng: np.random.Generator) -> list[list[bool]]:
    """Per track, the orientation of each of its ``repeats`` presentations.

    With repeats >= 2 each track alternates (A-first, then B-first, ... from a random
    start), so every pair is heard both ways; with repeats = 1 the balance is across
    the session's tracks.
    """
    if repeats == 1:
        return [[flag] for flag in balanced_orientations(n_tracks, rng)]
    starts = balanced_orientations(n_tracks, rng)
    return [[start if k % 2 == 0 else not start for k in range(repeats)] for start in starts]


def presented(pair: Sequence[str], first_plays_a: bool) -> tuple[str, str]:
    """(system A, system B) for a pair and an orientation."""
    x, y = pair
    return (x, y) if first_plays_a else (y, x)


__all__ = [
    "PAIR_SEPARATOR",
    "PROCEDURE_NAME",
    "PairedConfig",
    "REFERENCE_SYSTEM",
    "assign_orientations",
    "balanced_orientations",
    "check_design",
    "check_system_name",
    "pair_key",
    "presented",
    "split_pair_key",
    "system_pairs",
]
