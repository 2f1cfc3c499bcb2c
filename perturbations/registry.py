"""Families by name: ``get_family("noise", noise_dir="data/noise")``."""

from __future__ import annotations

import inspect
from typing import Any

from perturbations.base import Family
from perturbations.families import (
    ChainFamily,
    ClippingFamily,
    EqFamily,
    LowpassFamily,
    Mp3Family,
    MulawFamily,
    NoiseFamily,
    ReverbFamily,
)

_FAMILIES: dict[str, type[Family]] = {
    cls.name: cls
    for cls in (NoiseFamily, ReverbFamily, Mp3Family, EqFamily, LowpassFamily, ClippingFamily, MulawFamily, ChainFamily)
}


def available_families() -> list[str]:
    """Names of every family, in a stable order."""
    return list(_FAMILIES)


def options_for(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that family ``name`` accepts (chains pass theirs on)."""
    accepted = _accepted(_FAMILIES[name])
    return {k: v for k, v in options.items() if k in accepted}


def _accepted(cls: type[Family]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]


def get_family(name: str, **options: Any) -> Family:
    """Build family ``name`` with the ``options`` it accepts.

    Options are shared by all families (the CLI passes e.g. noise_dir and rir_dir to
    every family), so one meant for another family is ignored; an option that no
    family accepts (a typo) raises ValueError, as does an unknown name.
    """
    if name not in _FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose one of {', '.join(_FAMILIES)}")
    every = sorted({opt for cls in _FAMILIES.values() for opt in _accepted(cls)})
    unknown = [k for k in options if k not in every]
    if unknown:
        raise ValueError(f"unknown family option(s) {', '.join(unknown)}; valid options: {', '.join(every)}")
    cls = _FAMILIES[name]
    if cls is ChainFamily:
        return cls(**options)  # a chain hands the options on to its members
    return cls(**options_for(name, options))
