"""The contract of an adaptive procedure. Pure Python: no Flask, no database.

A procedure walks one track, a (participant, reference, family) triple, along
that family's ladder of available levels. The web layer stores ``state_dict()``
as JSON between requests and rebuilds the object with ``restore_procedure``.

Levels are in the ladder's own units (0..100). ``response_different`` is the
listener's answer: True for "different", False for "same".
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any


class Procedure(abc.ABC):
    name: str = ""
    defaults: dict[str, Any] = {}  # every option with its default; others are refused

    def __init__(self, levels: Sequence[float], **config: Any):
        if len(levels) < 2:
            raise ValueError(f"a procedure needs at least 2 levels on its ladder, got {len(levels)}")
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise ValueError(f"unknown {self.name} option(s) {unknown}; valid: {sorted(self.defaults)}")
        self.levels = sorted(float(v) for v in levels)
        self.config = {**self.defaults, **config}

    def _snap(self, level: float) -> int:
        """Index of the ladder rung nearest ``level``: procedures only present ladder levels."""
        return min(range(len(self.levels)), key=lambda i: abs(self.levels[i] - float(level)))

    @abc.abstractmethod
    def next_level(self) -> float | None:
        """The ladder level to present next, or None once the track has finished."""

    @abc.abstractmethod
    def update(self, level: float, response_different: bool) -> None:
        """Record the answer to a trial presented at ``level``."""

    @property
    @abc.abstractmethod
    def finished(self) -> bool: ...

    @abc.abstractmethod
    def estimate(self) -> float | None:
        """The current threshold estimate in level units, or None if not yet estimable."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, including ``name``, ``levels`` and ``config``."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, state: dict[str, Any]) -> Procedure: ...

    def trials_left_bounds(self, look_ahead: bool = True) -> tuple[int, int | None]:
        """(fewest, most) trials this track can still take, its next trial included.

        Exact where the stop rule allows: (0, 0) once finished; the next trial is
        simulated after each answer on copies of the state (``state_dict`` /
        ``from_state``, so ``self`` is untouched): when either answer ends the track
        it has exactly (1, 1) left, when one of them can the fewest is 1, otherwise 2.
        ``most`` is ``trial_bound - n_trials`` for a procedure with a trial bound
        (``max_trials``), else None (bounded by its criterion only). Used by
        ``listening_test.estimates`` so the progress bar's estimate becomes exact
        near the end of a track. ``look_ahead=False`` skips the simulated answers (the
        Psi method's next level costs a few ms): fewest is then 1.
        """
        if self.finished:
            return 0, 0
        bound = getattr(self, "trial_bound", None)
        n_done = getattr(self, "n_trials", None)
        most = None if bound is None or n_done is None else max(1, int(bound) - int(n_done))
        if not look_ahead:
            return 1, most
        level = self.next_level()
        if level is None:
            return 0, 0
        ends = []
        for answer in (True, False):
            twin = type(self).from_state(self.state_dict())
            twin.update(level, answer)
            ends.append(bool(twin.finished))
        if all(ends):
            return 1, 1
        fewest = 1 if any(ends) else 2
        return (fewest, most) if most is None or most >= fewest else (most, most)
