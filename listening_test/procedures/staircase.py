"""Transformed up/down staircase (Levitt 1971) over a ladder of levels.

n-down/1-up: after ``n_down`` consecutive "different" answers the level steps down
(harder); after a single "same" it steps up (easier). It converges on the level
where P(different)^n = 0.5, i.e. P(different) = 0.5^(1/n): 0.707 for 2-down/1-up,
0.794 for 3-down/1-up (see ``target_p_different``).

That is NOT the jndlab JND. The JND is the level where F = 0.5, i.e. where
P(different) = γ + (1 − γ − λ)/2 (0.5 for an ideal observer). The staircase point
sits above it: for a logistic F with γ = λ = 0 a 2-down/1-up track converges
ln(0.707/0.293)/slope ≈ 0.88/slope levels above the JND, and the offset depends on
the listener's slope, γ and λ, which the staircase does not know. ``estimate()``
therefore reports the staircase's own convergence point, uncorrected;
``benchmarks/procedure_efficiency.py`` scores it against both points.

Step sizes are in ladder steps and shrink at given reversal counts: with
``steps=[4, 2, 1]`` and ``shrink_at=[2, 4]`` the track moves 4 rungs until the
2nd reversal, 2 rungs until the 4th, then 1 rung. The track stops at
``max_trials`` OR ``max_reversals`` (either may be None, not both). The estimate
is the mean of the last ``estimate_reversals`` reversal levels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Procedure

DEFAULTS: dict[str, Any] = {
    "n_down": 2,
    "steps": [4, 2, 1],
    "shrink_at": [2, 4],
    "start_level": None,  # None: the top of the ladder (start clearly audible)
    "max_trials": 80,
    "max_reversals": 12,
    "estimate_reversals": 6,
}


def target_p_different(n_down: int) -> float:
    """P(different) at which an n-down/1-up staircase converges."""
    return 0.5 ** (1.0 / n_down)


def _positive_int(name: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"staircase {name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


class Staircase(Procedure):
    name = "staircase"
    defaults = DEFAULTS

    def __init__(self, levels: Sequence[float], **config: Any):
        super().__init__(levels, **config)
        c = self.config
        c["n_down"] = _positive_int("n_down", c["n_down"])
        c["max_trials"] = _positive_int("max_trials", c["max_trials"], allow_none=True)
        c["max_reversals"] = _positive_int("max_reversals", c["max_reversals"], allow_none=True)
        c["estimate_reversals"] = _positive_int("estimate_reversals", c["estimate_reversals"])
        if c["max_trials"] is None and c["max_reversals"] is None:
            raise ValueError("staircase needs a stop rule: set max_trials and/or max_reversals")
        c["steps"] = [_positive_int("steps", s) for s in c["steps"]]
        c["shrink_at"] = [_positive_int("shrink_at", r) for r in c["shrink_at"]]
        if not c["steps"]:
            raise ValueError("staircase steps must hold at least one step size")
        if len(c["shrink_at"]) != len(c["steps"]) - 1:
            raise ValueError(
                f"staircase shrink_at needs one reversal count per step change: "
                f"{len(c['steps'])} steps need {len(c['steps']) - 1} entries, got {len(c['shrink_at'])}"
            )
        if any(b <= a for a, b in zip(c["shrink_at"], c["shrink_at"][1:])):
            raise ValueError(f"staircase shrink_at must be strictly increasing, got {c['shrink_at']}")
        self._check_as_a_whole()
        if c["start_level"] is not None:
            start = float(c["start_level"])
            if not self.levels[0] <= start <= self.levels[-1]:
                raise ValueError(f"staircase start_level {start} lies outside the ladder [{self.levels[0]}, {self.levels[-1]}]")
            c["start_level"] = start
            self._index = self._snap(start)
        else:
            self._index = len(self.levels) - 1
        self._n_trials = 0
        self._run = 0  # consecutive "different" answers since the last move
        self._direction = 0  # -1 down, +1 up, 0 before the first move
        self._reversals: list[float] = []

    def _check_as_a_whole(self) -> None:
        """Settings that are each valid but cannot work together raise ValueError naming them.

        With ``max_reversals`` set, the track stops AT that many reversals: a
        ``shrink_at`` count at or above it is never reached (its step is never used),
        and an ``estimate_reversals`` above it averages fewer reversals than asked for.
        (``max_trials`` alone is a cap, not a criterion: short capped tracks are allowed.)
        """
        c = self.config
        stop = c["max_reversals"]
        if stop is None:
            return
        for i, r in enumerate(c["shrink_at"]):
            if r >= stop:
                raise ValueError(
                    f"staircase shrink_at[{i}]={r} is at or above max_reversals={stop}: the track stops "
                    f"first, so step {c['steps'][i + 1]} would never be used; lower shrink_at or raise max_reversals")
        if c["estimate_reversals"] > stop:
            raise ValueError(
                f"staircase estimate_reversals={c['estimate_reversals']} exceeds max_reversals={stop}: "
                "the estimate would average fewer reversals than asked for")

    def _step(self) -> int:
        n_rev = len(self._reversals)
        return self.config["steps"][sum(n_rev >= r for r in self.config["shrink_at"])]

    # -- contract ---------------------------------------------------------------
    @property
    def finished(self) -> bool:
        c = self.config
        return (c["max_trials"] is not None and self._n_trials >= c["max_trials"]) or (
            c["max_reversals"] is not None and len(self._reversals) >= c["max_reversals"]
        )

    @property
    def stop_reason(self) -> str | None:
        """"reversals" (reached its criterion), "max_trials" (hit the cap), or None while running."""
        c = self.config
        if c["max_reversals"] is not None and len(self._reversals) >= c["max_reversals"]:
            return "reversals"
        if c["max_trials"] is not None and self._n_trials >= c["max_trials"]:
            return "max_trials"
        return None

    @property
    def n_trials(self) -> int:
        return self._n_trials

    @property
    def trial_bound(self) -> int | None:
        """Most trials this track can take (None: bounded by reversals only)."""
        return self.config["max_trials"]

    @property
    def reversals(self) -> list[float]:
        return list(self._reversals)

    def next_level(self) -> float | None:
        return None if self.finished else self.levels[self._index]

    def update(self, level: float, response_different: bool) -> None:
        if self.finished:
            raise ValueError("staircase track has finished; it takes no more answers")
        # The rule acts on the level actually presented (snapped to the ladder).
        index = self._snap(level)
        self._n_trials += 1
        move = 0
        if response_different:
            self._run += 1
            if self._run >= self.config["n_down"]:
                move, self._run = -1, 0
        else:
            move, self._run = 1, 0
        if move:
            if self._direction and move != self._direction:
                self._reversals.append(self.levels[index])
            self._direction = move
            index = min(max(index + move * self._step(), 0), len(self.levels) - 1)
        self._index = index

    def estimate(self) -> float | None:
        """Mean of the last k reversal levels (the n-down/1-up point, not F = 0.5); None before any reversal."""
        if not self._reversals:
            return None
        return float(np.mean(self._reversals[-self.config["estimate_reversals"] :]))

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "levels": list(self.levels),
            "config": dict(self.config),
            "index": self._index,
            "n_trials": self._n_trials,
            "run": self._run,
            "direction": self._direction,
            "reversals": list(self._reversals),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Staircase":
        if state.get("name") != cls.name:
            raise ValueError(f"not a staircase state: name={state.get('name')!r}")
        proc = cls(state["levels"], **state["config"])
        proc._index = int(state["index"])
        proc._n_trials = int(state["n_trials"])
        proc._run = int(state["run"])
        proc._direction = int(state["direction"])
        proc._reversals = [float(v) for v in state["reversals"]]
        return proc
