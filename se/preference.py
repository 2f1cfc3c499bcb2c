"""Pairwise preference of two systems: statistics, and a simulated A/B listener.

Statistics (pure: no I/O, no torch), for the A/B listening test and its simulation:

- ``preference_share(choices, system="b", other="a")``: the share of non-tied choices
  that prefer ``system``, with an exact (Clopper-Pearson) confidence interval and a
  two-sided exact binomial test of "no preference" (p = 0.5). Ties ("tie", "none",
  "equal", "same", "no preference") are counted and left out of n.
- ``clopper_pearson(k, n)`` and ``binomial_two_sided_p(k, n)`` on their own.

Simulated listeners, the offline stand-in for the web app's A/B test:

- ``PsychometricABListener``: given the auditory-model distances of the two outputs to
  the clean reference (``listening_test.simulation.auditory.AuditoryModel``, the same
  model the simulated crowd judges JND pairs with), it prefers the one closer to clean
  through a psychometric function of the log distance ratio, with internal noise (close
  calls are coin flips) and lapses. ``choose(d_a, d_b, rng)`` only needs the two
  distances, so the web path's simulated participant (which fetches the three clips as
  bytes and can use ``DistanceCache.distance``) can call the same decision.
- ``simulate_ab(items, ...)``: every item judged by ``listeners`` virtual listeners;
  returns the choices and the pooled and per-item preference statistics.
- ``simulate_ab_from_folders(heldout, enhanced_a, enhanced_b)``: the same from a held-out
  set (``se make-heldout``) and the two systems' ``se evaluate`` outputs (``enhanced/``).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

TIE_LABELS = ("tie", "none", "equal", "same", "no preference", "no_preference")


# -- statistics --------------------------------------------------------------------------------
def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for k successes in n trials.

    ``(0, 1)`` for n = 0. The bounds are beta quantiles: lower = B(α/2; k, n−k+1) (0 when
    k = 0), upper = B(1−α/2; k+1, n−k) (1 when k = n).
    """
    from scipy.stats import beta

    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def binomial_two_sided_p(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test p-value (sum of outcomes no likelier than k; 1 for n = 0)."""
    from scipy.stats import binomtest

    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 1.0
    return float(binomtest(k, n, p, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class PreferenceResult:
    system: str           # the system whose share this is
    other: str
    wins: int             # choices preferring ``system``
    losses: int           # choices preferring ``other``
    ties: int             # left out of n
    n: int                # wins + losses
    share: float          # wins / n (nan for n = 0)
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float        # two-sided exact binomial test of share = 0.5

    def to_dict(self) -> dict:
        out = asdict(self)
        out["share"] = None if math.isnan(self.share) else self.share
        return out

    def describe(self) -> str:
        if self.n == 0:
            return f"no non-tied choices between {self.system} and {self.other} ({self.ties} ties)"
        return (f"{self.system} preferred over {self.other} in {self.wins}/{self.n} choices: share {self.share:.3f}, "
                f"{100 * self.confidence:g}% CI [{self.ci_low:.3f}, {self.ci_high:.3f}] (Clopper-Pearson), "
                f"two-sided binomial p = {self.p_value:.3g}" + (f"; {self.ties} ties left out" if self.ties else ""))


def preference_share(choices: Iterable[str], system: str = "b", other: str = "a",
                     confidence: float = 0.95) -> PreferenceResult:
    """The share of non-tied ``choices`` that name ``system`` rather than ``other``.

    Each choice is ``system``, ``other`` or a tie label (``TIE_LABELS``, case-insensitive;
    ``None`` is a tie too). Anything else raises ValueError naming it.
    """
    if system == other:
        raise ValueError("system and other must differ")
    wins = losses = ties = 0
    for choice in choices:
        label = "tie" if choice is None else str(choice)
        if label == system:
            wins += 1
        elif label == other:
            losses += 1
        elif label.strip().lower() in TIE_LABELS:
            ties += 1
        else:
            raise ValueError(f"unknown choice {choice!r}: expected {system!r}, {other!r} or a tie "
                             f"({', '.join(TIE_LABELS)})")
    n = wins + losses
    low, high = clopper_pearson(wins, n, confidence)
    return PreferenceResult(system, other, wins, losses, ties, n, wins / n if n else float("nan"), low, high,
                            confidence, binomial_two_sided_p(wins, n))


# -- simulated listeners -------------------------------------------------------------------------
@dataclass(frozen=True)
class PsychometricABListener:
    """Prefers the output closer to clean, by the auditory model, with internal noise.

    With r = ln((d_a + ε) / (d_b + ε)) (positive when b is closer to clean),
    P(b) = λ/2 + (1 − λ)·Φ(r / σ). σ (``noise_sd``) is the SD of the internal log distance
    ratio: outputs whose distances differ by a factor e^σ are told apart 84% of the time
    (before lapses); λ (``lapse``) is the rate of random answers. ε (``floor``, in the
    model's distance units) keeps two near-perfect outputs a coin flip.
    """

    noise_sd: float = 0.3
    lapse: float = 0.04
    floor: float = 0.01

    def __post_init__(self):
        if not self.noise_sd > 0:
            raise ValueError(f"noise_sd must be > 0, got {self.noise_sd}")
        if not 0 <= self.lapse < 1:
            raise ValueError(f"lapse must lie in [0, 1), got {self.lapse}")
        if not self.floor > 0:
            raise ValueError(f"floor must be > 0, got {self.floor}")

    def p_prefer_b(self, d_a: float, d_b: float) -> float:
        if not (d_a >= 0 and d_b >= 0):
            raise ValueError(f"distances must be >= 0, got {d_a}, {d_b}")
        r = math.log((d_a + self.floor) / (d_b + self.floor))
        return self.lapse / 2 + (1 - self.lapse) * 0.5 * math.erfc(-r / (self.noise_sd * math.sqrt(2)))

    def choose(self, d_a: float, d_b: float, rng: np.random.Generator) -> str:
        """'a' or 'b': which output this listener says sounds closer to clean."""
        return "b" if rng.random() < self.p_prefer_b(d_a, d_b) else "a"

    def describe(self) -> str:
        return (f"P(prefer b) = λ/2 + (1 − λ)·Φ(ln((d_a + ε)/(d_b + ε))/σ) on the auditory-model distances "
                f"d to clean, σ = {self.noise_sd:g}, λ = {self.lapse:g}, ε = {self.floor:g}.")


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
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "median": float(np.median(v)) if len(v) else None, "n": int(len(v))}


def simulate_ab(items: Sequence[ABItem], *, listeners: int = 5, listener: PsychometricABListener | None = None,
                seed: int = 0, model=None, level_db_spl: float | None = None, confidence: float = 0.95) -> dict:
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
    choices, majority, distances = [], [], {"a": [], "b": [], "noisy": []}
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
            choices.append({"item": item.name, "listener": j, "choice": pick, "d_a": d_a, "d_b": d_b,
                            "p_prefer_b": listener.p_prefer_b(d_a, d_b)})
        wins = picks.count("b")
        majority.append("b" if 2 * wins > listeners else "a" if 2 * wins < listeners else "tie")
    pooled = preference_share([c["choice"] for c in choices], "b", "a", confidence)
    by_item = preference_share(majority, "b", "a", confidence)
    return {"items": len(items), "listeners_per_item": listeners, "seed": seed, "level_db_spl": level,
            "listener": {**asdict(listener), "description": listener.describe()},
            "auditory_model": model.config(), "pooled": pooled.to_dict(), "by_item": by_item.to_dict(),
            "noiseless_b_closer": closer, "pooled_text": pooled.describe(), "by_item_text": by_item.describe(),
            "distance_summary": {k: _distance_summary(v) for k, v in distances.items() if v},
            "choices": choices}


def simulate_ab_from_folders(heldout: str | os.PathLike, enhanced_a: str | os.PathLike,
                             enhanced_b: str | os.PathLike, **kwargs) -> dict:
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
                raise ValueError(f"{path}: {audio.shape} at {out_rate} Hz does not match the clean "
                                 f"{clean.shape} at {rate} Hz")
            outputs.append(audio)
        items.append(ABItem(pair.name, clean, outputs[0], outputs[1], rate, noisy))
    return simulate_ab(items, **kwargs)


__all__ = ["ABItem", "PreferenceResult", "PsychometricABListener", "TIE_LABELS", "binomial_two_sided_p",
           "clopper_pearson", "preference_share", "simulate_ab", "simulate_ab_from_folders"]
