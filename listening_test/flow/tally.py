"""The headphone check's tally: answers and correct answers per test, and when the check ends.

The counts live in ``schedule_state`` (``screening_correct``, ``screening_answered``:
test name -> count). The check ends when every trial has been served, or earlier once a
pass is out of reach (``headphone.ScreeningConfig.cannot_pass``); its verdict is the
pass rule's (``ScreeningConfig.passes``) and one result row per configured test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..headphone import ScreeningConfig


@dataclass(frozen=True)
class Verdict:
    """The check's outcome: ``passed``, and one ``screening_results`` row per test
    (``test``, ``n_trials``, ``n_correct``, ``passed``)."""

    passed: bool
    results: list[dict[str, Any]]


def count(schedule_state: Mapping[str, Any], test: str, correct: bool | None) -> dict[str, Any]:
    """``schedule_state`` with one more answer to ``test`` counted (and one more correct
    one when ``correct``); a new dict, the old one is not changed."""
    tally = dict(schedule_state.get("screening_correct", {}))
    tally[test] = tally.get(test, 0) + int(bool(correct))
    answered = dict(schedule_state.get("screening_answered", {}))
    answered[test] = answered.get(test, 0) + 1
    return {**schedule_state, "screening_correct": tally, "screening_answered": answered}


def verdict(config: ScreeningConfig, schedule_state: Mapping[str, Any], served: int) -> Verdict | None:
    """None while the check goes on (``served`` of its ``trials_per_test x tests`` trials
    so far, and a pass still within reach); else its ``Verdict``."""
    tally = schedule_state.get("screening_correct", {})
    answered = schedule_state.get("screening_answered", {})
    total = config.trials_per_test * len(config.tests)
    if served < total and not config.cannot_pass(tally, answered):
        return None
    return Verdict(
        config.passes(tally),
        [
            {
                "test": name,
                "n_trials": answered.get(name, 0),
                "n_correct": tally.get(name, 0),
                "passed": tally.get(name, 0) >= config.min_correct,
            }
            for name in config.tests
        ],
    )
