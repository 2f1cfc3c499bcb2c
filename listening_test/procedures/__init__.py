"""Adaptive procedures (pure Python: no Flask, no database).

proc = make_procedure("staircase", levels, n_down=3)
level = proc.next_level(); proc.update(level, response_different=True)
state = proc.state_dict()          # JSON-serialisable, includes "name"
proc = restore_procedure(state)    # continues identically
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Procedure
from .bayesian import PsiMethod
from .binary_search import BinarySearch
from .staircase import Staircase

PROCEDURES: dict[str, type[Procedure]] = {cls.name: cls for cls in (Staircase, PsiMethod, BinarySearch)}


def _lookup(name: Any) -> type[Procedure]:
    try:
        return PROCEDURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown procedure {name!r}; valid: {', '.join(sorted(PROCEDURES))}") from None


def make_procedure(name: str, levels: Sequence[float], **config: Any) -> Procedure:
    return _lookup(name)(levels, **config)


def restore_procedure(state: dict[str, Any]) -> Procedure:
    if not isinstance(state, dict) or "name" not in state:
        raise ValueError("a procedure state must be a dict with a 'name' key")
    return _lookup(state["name"]).from_state(state)


__all__ = ["PROCEDURES", "Procedure", "make_procedure", "restore_procedure", "Staircase", "PsiMethod", "BinarySearch"]
