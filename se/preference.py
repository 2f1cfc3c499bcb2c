"""A simulated-listener A/B test of two speech enhancers, the offline stand-in for the
web app's ``ab_preference`` test.

- ``simulate_ab(items, ...)``: every item judged by ``listeners`` virtual listeners;
  returns the choices and the pooled and per-item preference statistics.
- ``simulate_ab_from_folders(heldout, enhanced_a, enhanced_b)``: the same from a held-out
  set (``se make-heldout``) and the two systems' ``se evaluate`` outputs (``enhanced/``).

The statistics live in ``analysis.pairwise`` (shared with the analysis of real A/B
judgments, ``analysis.preference``) and the simulated listener in
``listening_test.simulation.ab_listener``; both are re-exported here, so
``from se.preference import preference_share, PsychometricABListener`` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from analysis.pairwise import TIE_LABELS, PreferenceResult, binomial_two_sided_p, clopper_pearson, preference_share
from listening_test.simulation.ab_listener import PsychometricABListener


@dataclass(frozen=True)
class ABItem:
    name: str
    clean: np.ndarray
    a: np.ndarray
    b: np.ndarray
    sample_rate: int
    noisy: np.ndarray | None = None


def _distance_summary(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {
        "mean": float(v.mean()) if len(v) else None,
        "std": float(v.std(ddof=1)) if len(v) > 1 else None,
        "median": float(np.median(v)) if len(v) else None,
        "n": int(len(v)),
    }


def simulate_ab(
    items: Sequence[ABItem],
    *,
    listeners: int = 5,
    listener: PsychometricABListener | None = None,
    seed: int = 0,
    model=None,
    level_db_spl: float | None = None,
    confidence: float = 0.95,
) -> dict:
    """Every item judged by ``listeners`` virtual listeners (choice of listener j on item i
    from ``default_rng([seed, i, j])``, so results do not depend on the order of work).

    Returns ``{"choices": [...], "pooled": PreferenceResult dict, "by_item": ... (each item's
    majority; a tie when split evenly), "noiseless_b_closer", "distance_summary", ...}``.
    """
    from listening_test.simulation.auditory import DEFAULT_FULL_SCALE_DB_SPL, AuditoryModel

    if listeners < 1:
        raise ValueError("listeners must be at least 1")
    listener = listener or PsychometricABListener()
    model = model or AuditoryModel()
    level = DEFAULT_FULL_SCALE_DB_SPL if level_db_spl is None else float(level_db_spl)
    choices, majority = [], []
    distances: dict[str, list[float]] = {"a": [], "b": [], "noisy": []}
    closer = 0
    for i, item in enumerate(items):
        d_a = model.distance(item.clean, item.a, item.sample_rate, level)
        d_b = model.distance(item.clean, item.b, item.sample_rate, level)
        distances["a"].append(d_a)
        distances["b"].append(d_b)
        if item.noisy is not None:
            distances["noisy"].append(model.distance(item.clean, item.noisy, item.sample_rate, level))
        closer += int(d_b < d_a)
        picks = [listener.choose(d_a, d_b, np.random.default_rng([seed, i, j])) for j in range(listeners)]
        for j, pick in enumerate(picks):
            choices.append(
                {
                    "item": item.name,
                    "listener": j,
                    "choice": pick,
                    "d_a": d_a,
                    "d_b": d_b,
                    "p_prefer_b": listener.p_prefer_b(d_a, d_b),
                }
            )
        wins = picks.count("b")
        majority.append("b" if 2 * wins > listeners else "a" if 2 * wins < listeners else "tie")
    pooled = preference_share([c["choice"] for c in choices], "b", "a", confidence)
    by_item = preference_share(majority, "b", "a", confidence)
    return {
        "items": len(items),
        "listeners_per_item": listeners,
        "seed": seed,
        "level_db_spl": level,
        "listener": {**asdict(listener), "description": listener.describe()},
        "auditory_model": model.config(),
        "pooled": pooled.to_dict(),
        "by_item": by_item.to_dict(),
        "noiseless_b_closer": closer,
        "pooled_text": pooled.describe(),
        "by_item_text": by_item.describe(),
        "distance_summary": {k: _distance_summary(v) for k, v in distances.items() if v},
        "choices": choices,
    }


def simulate_ab_from_folders(
    heldout: str | os.PathLike, enhanced_a: str | os.PathLike, enhanced_b: str | os.PathLike, **kwargs
) -> dict:
    """``simulate_ab`` over a held-out set and two folders of enhanced files of the same names."""
    from se.data import find_pair_dirs, match_pairs
    from se.enhance import read_any

    pairs = match_pairs(*find_pair_dirs(heldout, "test"))
    items = []
    for pair in pairs:
        clean, rate, _ = read_any(pair.clean)
        noisy, _, _ = read_any(pair.noisy)
        outputs = []
        for folder in (enhanced_a, enhanced_b):
            path = Path(folder) / pair.name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no enhanced output for held-out file {pair.name}")
            audio, out_rate, _ = read_any(path)
            if out_rate != rate or audio.shape != clean.shape:
                raise ValueError(
                    f"{path}: {audio.shape} at {out_rate} Hz does not match the clean {clean.shape} at {rate} Hz"
                )
            outputs.append(audio)
        items.append(ABItem(pair.name, clean, outputs[0], outputs[1], rate, noisy))
    return simulate_ab(items, **kwargs)


__all__ = [
    "ABItem",
    "PreferenceResult",
    "PsychometricABListener",
    "TIE_LABELS",
    "binomial_two_sided_p",
    "clopper_pearson",
    "preference_share",
    "simulate_ab",
    "simulate_ab_from_folders",
]
