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

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import checks
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
# Upper bounds of the settings (far above any sensible study; they keep memory and time sane).
MAX_N_DOWN = 10
MAX_TRIALS = 2000
MAX_REVERSALS = 500
MAX_STEPS = 10
MAX_STEP_RUNGS = 1000


def target_p_different(n_down: int) -> float:
    """P(different) at which an n-down/1-up staircase converges."""
    return 0.5 ** (1.0 / n_down)


def fewest_trials_for_reversals(reversals: int, n_down: int) -> int:
    """Fewest trials an n-down/1-up track needs to make ``reversals`` reversals.

    ``reversals`` + 1 moves in alternating directions; the cheapest sequence starts
    with an upward move (one "same"), and each downward move takes ``n_down`` answers.
    """
    moves = reversals + 1
    ups, downs = (moves + 1) // 2, moves // 2
    return ups + downs * n_down


class Staircase(Procedure):
    name = "staircase"
    defaults = DEFAULTS

    def __init__(self, levels: Sequence[float], _restoring: bool = False, **config: Any):
        super().__init__(levels, **config)
        given = set() if _restoring else set(config)  # a restored state was checked when it was created
        c = self.config
        rungs = len(self.levels) - 1  # the largest move the ladder allows
        c["n_down"] = checks.integer("staircase", "n_down", c["n_down"], 1, MAX_N_DOWN)
        c["max_trials"] = checks.integer("staircase", "max_trials", c["max_trials"], 1, MAX_TRIALS, allow_none=True)
        c["max_reversals"] = checks.integer(
            "staircase", "max_reversals", c["max_reversals"], 1, MAX_REVERSALS, allow_none=True
        )
        c["estimate_reversals"] = checks.integer(
            "staircase", "estimate_reversals", c["estimate_reversals"], 1, MAX_REVERSALS
        )
        if c["max_trials"] is None and c["max_reversals"] is None:
            raise ValueError("staircase needs a stop rule: set max_trials and/or max_reversals")
        # A given step longer than the ladder's span only ever hits its ends: refused. (The
        # default steps on a short ladder clamp at its ends, as documented.)
        top = max(rungs, 1) if "steps" in given else MAX_STEP_RUNGS
        c["steps"] = [
            checks.integer("staircase", f"steps[{i}]", s, 1, top)
            for i, s in enumerate(checks.sequence("staircase", "steps", c["steps"], 1, MAX_STEPS))
        ]
        c["shrink_at"] = [
            checks.integer("staircase", f"shrink_at[{i}]", r, 1, MAX_REVERSALS)
            for i, r in enumerate(checks.sequence("staircase", "shrink_at", c["shrink_at"], 0, MAX_STEPS - 1))
        ]
        if len(c["shrink_at"]) != len(c["steps"]) - 1:
            raise ValueError(
                f"staircase shrink_at needs one reversal count per step change: "
                f"{len(c['steps'])} steps need {len(c['steps']) - 1} entries, got {len(c['shrink_at'])}"
            )
        if any(b <= a for a, b in zip(c["shrink_at"], c["shrink_at"][1:])):
            raise ValueError(f"staircase shrink_at must be strictly increasing, got {c['shrink_at']}")
        self._check_as_a_whole(given)
        if c["start_level"] is not None:
            start = checks.real("staircase", "start_level", c["start_level"], -math.inf, math.inf)
            if not self.levels[0] <= start <= self.levels[-1]:
                raise ValueError(
                    f"staircase start_level {start} lies outside the ladder [{self.levels[0]}, {self.levels[-1]}]"
                )
            c["start_level"] = start
            self._index = self._snap(start)
        else:
            self._index = len(self.levels) - 1
        self._n_trials = 0
        self._run = 0  # consecutive "different" answers since the last move
        self._direction = 0  # -1 down, +1 up, 0 before the first move
        self._reversals: list[float] = []

    def _check_as_a_whole(self, given: set[str]) -> None:
        """Settings that are each valid but cannot work together raise ValueError naming them.

        With ``max_reversals`` set, the track stops AT that many reversals: a
        ``shrink_at`` count at or above it is never reached (its step is never used),
        and an ``estimate_reversals`` above it averages fewer reversals than asked for.
        ``max_trials`` must allow one reversal (``fewest_trials_for_reversals(1, n_down)``
        trials), or the track could never give an estimate. A short capped track is
        allowed (``max_trials`` is a cap), but a setting GIVEN in ``given`` that the cap
        never lets the track reach is refused: a ``max_reversals`` criterion, a
        ``shrink_at`` count (its step never used) or an ``estimate_reversals`` needing
        more trials than ``max_trials``. (Defaults a short track does not reach are
        kept: they only say "at most".)
        """
        c = self.config
        stop, cap, n_down = c["max_reversals"], c["max_trials"], c["n_down"]
        if stop is not None:
            for i, r in enumerate(c["shrink_at"]):
                if r >= stop:
                    raise ValueError(
                        f"staircase shrink_at[{i}]={r} is at or above max_reversals={stop}: the track stops "
                        f"first, so step {c['steps'][i + 1]} would never be used; lower shrink_at or raise max_reversals"
                    )
            if c["estimate_reversals"] > stop:
                raise ValueError(
                    f"staircase estimate_reversals={c['estimate_reversals']} exceeds max_reversals={stop}: "
                    "the estimate would average fewer reversals than asked for"
                )
        if cap is None:
            return
        need = fewest_trials_for_reversals(1, n_down)
        if need > cap:
            raise ValueError(
                f"staircase max_trials={cap} is below the {need} trials one reversal takes with "
                f"n_down={n_down}: the track could never give an estimate; raise max_trials or lower n_down"
            )
        if "max_reversals" in given and stop is not None and fewest_trials_for_reversals(stop, n_down) > cap:
            raise ValueError(
                f"staircase max_reversals={stop} can never be reached within max_trials={cap} (it takes at least "
                f"{fewest_trials_for_reversals(stop, n_down)} trials with n_down={n_down}); lower max_reversals "
                "or raise max_trials"
            )
        if "shrink_at" in given:
            for i, r in enumerate(c["shrink_at"]):
                if fewest_trials_for_reversals(r, n_down) >= cap:
                    raise ValueError(
                        f"staircase shrink_at[{i}]={r} can never be reached before max_trials={cap} (it takes at "
                        f"least {fewest_trials_for_reversals(r, n_down)} trials with n_down={n_down}), so step "
                        f"{c['steps'][i + 1]} would never be used; lower shrink_at or raise max_trials"
                    )
        if "estimate_reversals" in given and fewest_trials_for_reversals(c["estimate_reversals"], n_down) > cap:
            raise ValueError(
                f"staircase estimate_reversals={c['estimate_reversals']} can never be reached within "
                f"max_trials={cap} (it takes at least "
                f"{fewest_trials_for_reversals(c['estimate_reversals'], n_down)} trials with n_down={n_down}); "
                "lower estimate_reversals or raise max_trials"
            )

    @property
    def fewest_trials(self) -> int:
        """Fewest trials this track can take before it finishes (its stop rule at its quickest)."""
        c = self.config
        options = [c["max_trials"]] if c["max_trials"] is not None else []
        if c["max_reversals"] is not None:
            options.append(fewest_trials_for_reversals(c["max_reversals"], c["n_down"]))
        return min(options)

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
        """ "reversals" (reached its criterion), "max_trials" (hit the cap), or None while running."""
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
    def _construct(cls, levels: Any, config: Any) -> Staircase:
        return cls(levels, _restoring=True, **config)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Staircase:
        if state.get("name") != cls.name:
            raise ValueError(f"not a staircase state: name={state.get('name')!r}")
        proc = cls._fresh(state["levels"], state["config"])  # the constructor's checks, once per ladder and options
        proc._index = int(state["index"])
        proc._n_trials = int(state["n_trials"])
        proc._run = int(state["run"])
        proc._direction = int(state["direction"])
        proc._reversals = [float(v) for v in state["reversals"]]
        return proc
