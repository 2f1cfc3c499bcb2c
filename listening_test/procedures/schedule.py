"""Session scheduling policy: which track goes next, and when a catch trial goes in.

Pure functions on plain values (no Flask, no database). The session flow
(``listening_test.flow.trials``) keeps the state where it already lives (one row per
track with its trial count; a few counters in the session row, stored by
``listening_test.store``) and asks these functions for each decision, so the policy
has one implementation and is unit-tested on its own.

Nothing here knows what a track *is*: a same/different track is a (reference,
family) ladder walk, an A/B preference track would be (item, system pair), and
both are just "a track with ``n`` trials so far". Catch kinds are plain names
with shares, so a test type brings its own (same/different: ``identical`` pairs
that must be "same" and ``obvious`` top-rung pairs that must be "different";
A/B: e.g. clean-versus-anchor pairs). See ``SAME_DIFFERENT_CATCH_KINDS``.

    i = choose_track([3, 2, 2], rng, avoid=1)            # -> 2
    kind = next_catch(trials_done=9, catches_done={"identical": 1, "obvious": 0},
                      rate=0.2, shares=catch_shares(0.5), rng=rng)   # -> "obvious" or None
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SAME_DIFFERENT_CATCH_KINDS = ("identical", "obvious")
_EPS = 1e-9


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def choose_track(n_trials: Sequence[int], rng: np.random.Generator, avoid: int | None = None) -> int:
    """Index (into ``n_trials``) of the open track to serve next.

    ``n_trials`` holds each *open* track's trial count. Tracks progress evenly:
    the next one has the fewest trials so far, ties broken by ``rng``. ``avoid``
    (the track just served) loses a tie when another track is as far behind, so
    the same pair rarely comes back to back.
    """
    _check_rng(rng)
    if len(n_trials) == 0:
        raise ValueError("choose_track needs at least one open track")
    fewest = min(n_trials)
    candidates = [i for i, n in enumerate(n_trials) if n == fewest]
    if len(candidates) > 1 and avoid in candidates:
        candidates.remove(avoid)
    return candidates[int(rng.integers(len(candidates)))]


def catch_shares(obvious_share: float = 0.5, kinds: Sequence[str] = SAME_DIFFERENT_CATCH_KINDS) -> dict[str, float]:
    """Shares for the same/different catch kinds: ``obvious_share`` obvious, the rest identical."""
    if not 0.0 <= obvious_share <= 1.0:
        raise ValueError(f"obvious_share must lie in [0, 1], got {obvious_share}")
    identical, obvious = kinds
    return {identical: 1.0 - obvious_share, obvious: obvious_share}


def validate_catch_config(rate: float, shares: Mapping[str, float]) -> None:
    """Raise ValueError unless ``rate`` is in [0, 1) and ``shares`` are non-negative and sum to 1."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"catch rate must lie in [0, 1), got {rate}")
    if any(share < 0 for share in shares.values()):
        raise ValueError(f"catch shares must be non-negative, got {dict(shares)}")
    if rate > 0 and abs(sum(shares.values()) - 1.0) > 1e-6:
        raise ValueError(f"catch shares must sum to 1, got {dict(shares)}")


def catch_due(trials_done: int, n_catches: int, rate: float, rng: np.random.Generator) -> bool:
    """Whether trial number ``trials_done`` (0-based, catch trials counted) is a catch trial.

    Each trial is a catch with probability ``rate``, but the running count stays
    within one of ``rate × trials`` at every point of the session: a catch is
    forced when the count would fall a whole catch behind, and refused when it
    is already ahead. So a short session cannot end with no catch at all (8
    trials at rate 0.2 have at least one) nor with a burst of them.
    """
    if rate <= 0:
        return False
    target = rate * (trials_done + 1)  # expected catches once this trial is done
    if target - n_catches >= 1.0 - _EPS:
        return True
    if n_catches - target > _EPS:
        return False
    return bool(rng.random() < rate)


def catch_kind(catches_done: Mapping[str, int], shares: Mapping[str, float], rng: np.random.Generator) -> str:
    """The catch kind furthest behind its share (ties broken by ``rng``).

    With equal shares of two kinds this alternates them, so their counts never
    differ by more than one.
    """
    _check_rng(rng)
    kinds = [k for k, share in shares.items() if share > 0]
    if not kinds:
        raise ValueError("no catch kind has a positive share")
    total = sum(int(catches_done.get(k, 0)) for k in shares) + 1
    deficit = {k: shares[k] * total - int(catches_done.get(k, 0)) for k in kinds}
    most = max(deficit.values())
    candidates = [k for k in kinds if deficit[k] >= most - _EPS]
    return candidates[int(rng.integers(len(candidates)))]


def next_catch(
    trials_done: int,
    catches_done: Mapping[str, int],
    rate: float,
    shares: Mapping[str, float],
    rng: np.random.Generator,
) -> str | None:
    """The catch kind to serve as trial ``trials_done`` (0-based), or None for an adaptive trial.

    ``catches_done`` counts the catch trials served so far, by kind. See
    ``catch_due`` for the rate rule and ``catch_kind`` for the balance of kinds.
    """
    _check_rng(rng)
    validate_catch_config(rate, shares)
    n_catches = sum(int(v) for v in catches_done.values())
    if not catch_due(int(trials_done), n_catches, rate, rng):
        return None
    return catch_kind(catches_done, shares, rng)


def phase_finished(n_open_tracks: int, trials_done: int, max_trials: int | None) -> bool:
    """The adaptive phase ends when every track has finished or at ``max_trials`` (catches included)."""
    return n_open_tracks == 0 or (max_trials is not None and trials_done >= max_trials)


__all__ = [
    "SAME_DIFFERENT_CATCH_KINDS",
    "catch_due",
    "catch_kind",
    "catch_shares",
    "choose_track",
    "next_catch",
    "phase_finished",
    "validate_catch_config",
]
