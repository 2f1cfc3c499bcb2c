"""The contract of an adaptive procedure. Pure Python: no Flask, no database.

A procedure walks one track, a (participant, reference, family) triple, along
that family's ladder of available levels. The web layer stores ``state_dict()``
as JSON between requests and rebuilds the object with ``restore_procedure``.

Restoring is on every participant's answer path, several times an answer (issue 18), so
``from_state`` does not re-validate a ladder and options it has seen before: the fresh
object the constructor built for them (all checks passed) is kept as a template, keyed
by an exact image of the stored ``levels`` and ``config`` (types, values and the sign of
zero: equal keys are equal inputs), and copied. Anything else, a state that fails the
checks included, takes the constructor and raises as it always did.

Levels are in the ladder's own units (0..100). ``response_different`` is the
listener's answer: True for "different", False for "same".
"""

from __future__ import annotations

import abc
import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

MAX_TEMPLATES = 256  # validated (class, levels, config) kept for restores; a study has a few
_templates: dict[tuple, _Template] = {}
_templates_lock = threading.Lock()
_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})
_FLOAT = {float}

P = TypeVar("P", bound="Procedure")


def _template_key(cls: type, levels: Any, config: Any) -> tuple | None:
    """The template key of ``cls(levels, **config)`` when both are plain JSON data (a list
    of scalars; a dict of scalars and lists of scalars, keyed by strings), else None (the
    constructor decides). Equal keys are equal inputs, types included: a ladder of floats
    is its tuple (a NaN equals only itself, the same object), with the signs of its rungs
    when one is zero (0.0 and -0.0 are equal but make different ladders); anything else
    is its ``repr``, which for these types reads back as the same types and values (a NaN
    prints like any NaN: no key)."""
    if type(levels) is not list or type(config) is not dict:
        return None
    kinds = set(map(type, levels))
    if kinds == _FLOAT:
        levels_key: Any = tuple(levels)
        if 0.0 in levels_key:  # -0.0 == 0.0: the signs tell them apart
            levels_key = levels_key, tuple(map(math.copysign, itertools.repeat(1.0), levels_key))
    elif _SCALARS.issuperset(kinds):
        levels_key = repr(levels)
        if "nan" in levels_key:
            return None
    else:
        return None
    if not _STR.issuperset(map(type, config)):
        return None
    for value in config.values():
        if type(value) is list:
            if not _SCALARS.issuperset(map(type, value)):
                return None
        elif type(value) not in _SCALARS:
            return None
    config_key = repr(config)
    if "nan" in config_key:
        return None
    return cls, levels_key, config_key


@dataclass(frozen=True)
class _Template:
    """A fresh procedure's attributes, and which of them (and which lists in which dicts)
    a copy must not share."""

    attrs: dict[str, Any]
    lists: tuple[str, ...]
    dicts: tuple[tuple[str, tuple[str, ...]], ...]
    arrays: tuple[str, ...]

    @classmethod
    def of(cls, attrs: dict[str, Any]) -> _Template | None:
        """The template of ``attrs``, copied; None unless every mutable part is a list of
        scalars, a dict of scalars and lists of scalars, or an array (anything else is a
        scalar or a tuple)."""
        lists, dicts, arrays = [], [], []
        for name, value in attrs.items():
            kind = type(value)
            if kind is list and _SCALARS.issuperset(map(type, value)):
                lists.append(name)
            elif kind is dict:
                inner = tuple(k for k, v in value.items() if type(v) is list)
                if not all(type(v) in _SCALARS for v in value.values() if type(v) is not list):
                    return None
                if not all(_SCALARS.issuperset(map(type, value[k])) for k in inner):
                    return None
                dicts.append((name, inner))
            elif kind is np.ndarray:
                arrays.append(name)
            elif kind not in _SCALARS and kind is not tuple:
                return None
        empty = cls(attrs, tuple(lists), tuple(dicts), tuple(arrays))
        return cls(empty.copy(), empty.lists, empty.dicts, empty.arrays)

    def copy(self) -> dict[str, Any]:
        """The attributes, sharing nothing mutable with the template."""
        out = self.attrs.copy()
        for name in self.lists:
            out[name] = out[name].copy()
        for name, inner in self.dicts:
            value = out[name] = out[name].copy()
            for key in inner:
                value[key] = value[key].copy()
        for name in self.arrays:
            out[name] = out[name].copy()
        return out


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

    # -- restoring ------------------------------------------------------------------
    # Attributes a template leaves out (large arrays): ``_derive`` rebuilds them from the others.
    _derived: tuple[str, ...] = ()

    @classmethod
    def _construct(cls: type[P], levels: Any, config: Any) -> P:
        """The constructor call ``from_state`` makes for a stored ladder and options."""
        return cls(levels, **config)

    @classmethod
    def _fresh(cls: type[P], levels: Any, config: Any) -> P:
        """What ``cls._construct(levels, config)`` returns (a track before its first
        answer), copied from a template when these ``levels`` and ``config`` passed the
        constructor before. Raises as the constructor does."""
        key = _template_key(cls, levels, config)
        template = None if key is None else _templates.get(key)
        if template is not None:
            fresh = object.__new__(cls)
            fresh.__dict__.update(template.copy())
            if cls._derived:
                fresh._derive()
            return fresh
        proc = cls._construct(levels, config)
        if key is not None:
            template = _Template.of({name: v for name, v in proc.__dict__.items() if name not in cls._derived})
            if template is not None:
                with _templates_lock:
                    while _templates and len(_templates) >= MAX_TEMPLATES:
                        del _templates[next(iter(_templates))]  # the oldest
                    _templates[key] = template
        return proc

    def _derive(self) -> None:  # noqa: B027 - a hook: only procedures with ``_derived`` attributes need it
        """Set the ``_derived`` attributes from the others (as the constructor does)."""

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
