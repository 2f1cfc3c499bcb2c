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
    def from_state(cls, state: dict[str, Any]) -> "Procedure": ...
