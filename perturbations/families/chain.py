"""Chains: one family from each of several categories, in random order (DPAM's "combined" set)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from perturbations.base import Family, Parameter
from perturbations.families import check_audio

DEFAULT_CATEGORIES: tuple[tuple[str, ...], ...] = (("noise",), ("room",), ("codec",), ("filter", "distortion"))


class ChainFamily(Family):
    """Draws one member per category group, shuffles their order, applies each at the same level.

    pool: the candidate families (default: every registered non-chain family, built
        with ``options`` such as noise_dir=... or rir_dir=...).
    categories: groups of categories; one family is drawn from each group.
    """

    name = "chain"
    category = "chain"
    description = "One family per category (noise, room, codec, filter/distortion) in random order, same level."
    parameters = (
        Parameter("order", "random", "random", "member family names in the order applied"),
        Parameter("members", "per member", "per member", "each member's family name and params"),
    )

    def __init__(
        self,
        pool: Sequence[Family] | None = None,
        categories: Sequence[Sequence[str] | str] = DEFAULT_CATEGORIES,
        **options: Any,
    ):
        if pool is None:
            from perturbations import registry  # late import: the registry imports this module

            pool = [
                registry.get_family(n, **registry.options_for(n, options))
                for n in registry.available_families()
                if n != self.name
            ]
        self.pool = {f.name: f for f in pool}
        groups = [(c,) if isinstance(c, str) else tuple(c) for c in categories]
        if not groups:
            raise ValueError("chain: categories must name at least one category")
        self.groups: list[tuple[str, list[str]]] = []
        for group in groups:
            names = sorted(n for n, f in self.pool.items() if f.category in group)
            if not names:
                known = sorted({f.category for f in self.pool.values()})
                raise ValueError(f"chain: no family in category {'/'.join(group)}; categories: {', '.join(known)}")
            self.groups.append(("/".join(group), names))

    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        chosen = [names[int(rng.integers(len(names)))] for _, names in self.groups]
        order = [chosen[i] for i in rng.permutation(len(chosen))]
        members = [
            {
                "family": name,
                "params": self.pool[name].sample_params(level, rng, sample_rate=sample_rate, num_samples=num_samples),
            }
            for name in order
        ]
        return {"order": order, "members": members}

    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        audio = check_audio(audio, sample_rate)
        members = params.get("members") if isinstance(params, dict) else None
        if not isinstance(members, list) or not members:
            raise ValueError("chain: params need a non-empty 'members' list of {family, params}")
        for member in members:
            name = member.get("family") if isinstance(member, dict) else None
            if name not in self.pool:
                raise ValueError(
                    f"chain: unknown member family {name!r}; this chain has {', '.join(sorted(self.pool))}"
                )
            audio = self.pool[name].apply(audio, sample_rate, member.get("params", {}))
        return audio
