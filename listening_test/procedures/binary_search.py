"""DPAM-style binary search over the ladder (Manocha et al. 2020).

DPAM's crowdsourcing app bisected, per reference, between a level known to sound
"same" and one known to sound "different". Here the bracket starts at the ladder's
ends: the bottom rung is assumed "same", the top rung "different". Each probe is
the middle rung of the bracket; a "different" answer (the majority of ``repeats``
answers, if more than one) moves the top of the bracket down to the probe, a
"same" moves the bottom up. A pass ends when the bracket spans adjacent rungs; its
estimate is their midpoint. ``passes`` > 1 restarts the search from the full
ladder and averages the passes (DPAM used one pass).

Stop rule: all passes done (``stop_reason`` "converged") or ``max_trials``, which
must allow one pass at least (``repeats`` x floor(log2(rungs - 1)) trials; a cap that
ends later passes is allowed: the estimate averages the passes completed).

Each decision rests on one answer (or a majority), so the search homes in on the
level where P(different) = 0.5. That equals the jndlab JND (F = 0.5) only when
γ = λ; a false-alarm rate γ > λ pulls it below the JND. One lapse or false alarm
early in a pass sends the pass to the wrong half of the ladder for good, which is
why a single pass is cheap (about log2(rungs) trials) but noisy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import checks
from .base import Procedure

DEFAULTS: dict[str, Any] = {
    "repeats": 1,  # answers per probe, decided by majority: must be odd
    "passes": 1,
    "max_trials": None,  # None: no cap beyond the passes themselves
}


MAX_REPEATS = 99
MAX_PASSES = 10_000  # many passes need a max_trials cap: uncapped, the passes' bound must be <= MAX_TRIALS
MAX_TRIALS = 2000


def fewest_probes(span: int) -> int:
    """Fewest probes that bisect a bracket of ``span`` rung gaps down to adjacent rungs (floor(log2(span)))."""
    return max(span, 1).bit_length() - 1


class BinarySearch(Procedure):
    name = "binary_search"
    defaults = DEFAULTS

    def __init__(self, levels: Sequence[float], **config: Any):
        super().__init__(levels, **config)
        if len(self.levels) < 3:
            raise ValueError(f"binary_search needs at least 3 levels to bisect, got {len(self.levels)}")
        c = self.config
        c["repeats"] = checks.integer("binary_search", "repeats", c["repeats"], 1, MAX_REPEATS)
        c["passes"] = checks.integer("binary_search", "passes", c["passes"], 1, MAX_PASSES)
        c["max_trials"] = checks.integer("binary_search", "max_trials", c["max_trials"], 1, MAX_TRIALS, allow_none=True)
        if c["repeats"] % 2 == 0:
            raise ValueError(f"binary_search repeats must be odd so a majority exists, got {c['repeats']}")
        if c["max_trials"] is None and self.trial_bound > MAX_TRIALS:
            raise ValueError(
                f"binary_search passes={c['passes']} x repeats={c['repeats']} can take {self.trial_bound} trials "
                f"on a ladder of {len(self.levels)} levels, above {MAX_TRIALS}; lower them or set max_trials"
            )
        if c["max_trials"] is not None:
            need = c["repeats"] * fewest_probes(len(self.levels) - 1)
            if c["max_trials"] < need:
                raise ValueError(
                    f"binary_search max_trials={c['max_trials']} is below the {need} trials one pass takes at the "
                    f"least with repeats={c['repeats']} on a ladder of {len(self.levels)} levels: the track could "
                    "never finish a pass; raise max_trials or lower repeats"
                )
        self._lo, self._hi = 0, len(self.levels) - 1
        self._votes: list[int] = []  # answers (1 = different) at the current probe
        self._pass_estimates: list[float] = []
        self._n_trials = 0

    def _probe(self) -> int:
        return (self._lo + self._hi) // 2

    @property
    def n_trials(self) -> int:
        return self._n_trials

    @property
    def fewest_trials(self) -> int:
        """Fewest trials this track can take before it finishes."""
        c = self.config
        need = c["passes"] * c["repeats"] * fewest_probes(len(self.levels) - 1)
        return need if c["max_trials"] is None else min(need, c["max_trials"])

    @property
    def trial_bound(self) -> int:
        """Most trials this track can take: each pass takes at most ceil(log2(rungs − 1)) probes."""
        bound = self.config["passes"] * self.config["repeats"] * math.ceil(math.log2(len(self.levels) - 1))
        cap = self.config["max_trials"]
        return bound if cap is None else min(bound, cap)

    @property
    def stop_reason(self) -> str | None:
        """ "converged" (all passes done), "max_trials", or None while running."""
        if len(self._pass_estimates) >= self.config["passes"]:
            return "converged"
        if self.config["max_trials"] is not None and self._n_trials >= self.config["max_trials"]:
            return "max_trials"
        return None

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def next_level(self) -> float | None:
        return None if self.finished else self.levels[self._probe()]

    def update(self, level: float, response_different: bool) -> None:
        if self.finished:
            raise ValueError("binary_search track has finished; it takes no more answers")
        if self._snap(level) != self._probe():
            # Bisection only makes sense for the probe it asked about.
            raise ValueError(f"binary_search expected an answer at level {self.levels[self._probe()]}, got {level}")
        self._n_trials += 1
        self._votes.append(int(bool(response_different)))
        if len(self._votes) < self.config["repeats"]:
            return
        if 2 * sum(self._votes) > len(self._votes):
            self._hi = self._probe()
        else:
            self._lo = self._probe()
        self._votes = []
        if self._hi - self._lo <= 1:
            self._pass_estimates.append((self.levels[self._lo] + self.levels[self._hi]) / 2)
            self._lo, self._hi = 0, len(self.levels) - 1

    def estimate(self) -> float | None:
        """Mean of the completed passes' estimates; mid-pass, the current bracket's midpoint."""
        if self._n_trials == 0:
            return None
        if self._pass_estimates:
            return float(np.mean(self._pass_estimates))
        return (self.levels[self._lo] + self.levels[self._hi]) / 2

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "levels": list(self.levels),
            "config": dict(self.config),
            "lo": self._lo,
            "hi": self._hi,
            "votes": list(self._votes),
            "pass_estimates": list(self._pass_estimates),
            "n_trials": self._n_trials,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BinarySearch:
        if state.get("name") != cls.name:
            raise ValueError(f"not a binary_search state: name={state.get('name')!r}")
        proc = cls._fresh(state["levels"], state["config"])  # the constructor's checks, once per ladder and options
        proc._lo, proc._hi = int(state["lo"]), int(state["hi"])
        proc._votes = [int(v) for v in state["votes"]]
        proc._pass_estimates = [float(v) for v in state["pass_estimates"]]
        proc._n_trials = int(state["n_trials"])
        return proc
