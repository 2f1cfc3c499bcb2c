"""Bayesian adaptive procedure: the Psi method (Kontsevich & Tyler 1999), with
nuisance parameters marginalised as in Psi-marginal (Prins 2013).

A grid posterior over threshold × slope × (lapse λ, false-alarm rate γ) of
P(different | level) = γ + (1 − γ − λ)·F(level; threshold, slope) (see observer.py;
threshold = the level where F = 0.5, the jndlab JND). The next level is the ladder
level with the minimum expected posterior entropy (maximum expected information
gain) over the parameters of interest, (threshold, slope) by default, λ and γ
summed out. The track stops once the posterior SD of the threshold falls to
``target_sd`` (after ``min_trials``) or at ``max_trials``. The estimate is the
posterior mean (or mode) of the threshold.

State is the answer history only ([[level, 0|1], ...]): the posterior is rebuilt
on restore by replaying the same multiplications in the same order, so a restored
track is bit-identical, and the likelihood table is cached per grid so a restore
costs well under a millisecond of table building in a long-running server. A
restore also skips the option checks for options it has seen (``base``: a template
of the grid) and takes a posterior replayed before (the same answers, or all but
the last) from a small memo, so the several restores of one answer replay at most
one answer.
"""

from __future__ import annotations

import functools
import math
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import checks
from .base import Procedure
from .observer import FUNCTIONS, psychometric

DEFAULTS: dict[str, Any] = {
    "function": "logistic",
    "threshold_range": None,  # None: the ladder's range
    "n_thresholds": 101,
    "slope_range": None,  # None: [0.03, 1.0] per level (logistic), [0.5, 10] (Weibull shape)
    "n_slopes": 12,
    "lapse_rates": [0.0, 0.02, 0.05],
    "false_alarm_rates": [0.0, 0.05, 0.15],
    "entropy_over": "threshold_slope",  # or "threshold"
    "estimate": "mean",  # or "mode"
    "target_sd": 4.0,  # stop when the threshold's posterior SD <= this (None: never)
    "min_trials": 8,
    "max_trials": 60,
}
# Upper bounds: the likelihood table holds levels x thresholds x slopes x lapses x false alarms
# float64 cells (two tables, cached per grid), so its size is bounded as a whole too.
MAX_THRESHOLDS = 1001
MAX_SLOPES = 200
MAX_RATES = 10
MAX_TRIALS = 2000
MAX_GRID_CELLS = 1_000_000  # ~4 ms a trial (next_level is ~4 ns a cell on one core), 8 MB a table
# cells x max_trials: a whole track's work (the default grid on a 10-rung ladder with 60
# trials is 6.5e6). The creation-time length estimate simulates 120 tracks, so this bound
# keeps it under a minute (~0.4 s a track at most).
MAX_TRACK_WORK = 100_000_000
DEFAULT_SLOPES = {"logistic": [0.03, 1.0], "weibull": [0.5, 10.0]}


@functools.lru_cache(maxsize=16)
def _likelihood_table(levels, thresholds, slopes, lapses, false_alarms, function):
    """P(different | level, θ) as an array (levels, thresholds, slopes, lapses × false alarms).

    Cached: it depends only on the grid, and building it dominates a restore.
    """
    lv = np.asarray(levels)[:, None, None, None, None]
    t = np.asarray(thresholds)[None, :, None, None, None]
    s = np.asarray(slopes)[None, None, :, None, None]
    lam = np.asarray(lapses)[None, None, None, :, None]
    gam = np.asarray(false_alarms)[None, None, None, None, :]
    p = psychometric(lv, t, s, gam, lam, function)
    p = p.reshape(len(levels), len(thresholds), len(slopes), -1)
    p = np.clip(p, 1e-9, 1.0 - 1e-9)  # keep every grid point alive: one surprising answer never zeroes it
    p.setflags(write=False)
    return p


@functools.lru_cache(maxsize=16)
def _same_table(table_key: tuple) -> np.ndarray:
    """1 − P(different | level, θ): the likelihood of a "same" answer, cached beside the table."""
    same = 1.0 - _likelihood_table(*table_key)
    same.setflags(write=False)
    return same


# Posteriors replayed by restores, by (id of the grid's likelihood table, answers): a track's
# state is restored several times an answer (issue 18), each time replaying all its answers.
# Each entry holds a weak reference to its table (an id is reused once its table is gone,
# and the memo must not keep tables the table cache let go). Shared read-only (``_apply``
# makes a new array); oldest out first past either bound.
MAX_POSTERIORS = 256
MAX_POSTERIOR_BYTES = 32 * 2**20
_posteriors: dict[tuple[int, tuple[int, ...]], tuple[weakref.ref, np.ndarray]] = {}
_posteriors_bytes = 0
_posteriors_lock = threading.Lock()


def _remember_posterior(table: np.ndarray, answers: tuple[int, ...], posterior: np.ndarray) -> None:
    global _posteriors_bytes
    posterior.setflags(write=False)
    with _posteriors_lock:
        key = (id(table), answers)
        if key in _posteriors:
            return
        while _posteriors and (
            len(_posteriors) >= MAX_POSTERIORS or _posteriors_bytes + posterior.nbytes > MAX_POSTERIOR_BYTES
        ):
            _posteriors_bytes -= _posteriors.pop(next(iter(_posteriors)))[1].nbytes
        _posteriors[key] = (weakref.ref(table), posterior)
        _posteriors_bytes += posterior.nbytes


@functools.lru_cache(maxsize=16)
def _prior(table_key: tuple) -> np.ndarray:
    """The uniform prior over the grid, cached beside the table (read-only: ``_apply`` makes a new array)."""
    table = _likelihood_table(*table_key)
    prior = np.full(table.shape[1:], 1.0 / table[0].size)
    prior.setflags(write=False)
    return prior


def _neg_entropy_sum(m: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Σ m·log m over ``axes`` (0·log 0 = 0)."""
    return np.sum(m * np.log(np.where(m > 0, m, 1.0)), axis=axes)


class PsiMethod(Procedure):
    name = "bayesian"
    defaults = DEFAULTS

    def __init__(self, levels: Sequence[float], **config: Any):
        super().__init__(levels, **config)
        c = self.config
        if not isinstance(c["function"], str) or c["function"] not in FUNCTIONS:
            raise ValueError(
                f"bayesian function: unknown psychometric function {c['function']!r}; valid: {', '.join(FUNCTIONS)}"
            )
        c["entropy_over"] = checks.choice(
            "bayesian", "entropy_over", c["entropy_over"], ("threshold_slope", "threshold")
        )
        c["estimate"] = checks.choice("bayesian", "estimate", c["estimate"], ("mean", "mode"))
        c["n_thresholds"] = checks.integer("bayesian", "n_thresholds", c["n_thresholds"], 2, MAX_THRESHOLDS)
        c["n_slopes"] = checks.integer("bayesian", "n_slopes", c["n_slopes"], 2, MAX_SLOPES)
        c["min_trials"] = checks.integer("bayesian", "min_trials", c["min_trials"], 0, MAX_TRIALS)
        c["max_trials"] = checks.integer("bayesian", "max_trials", c["max_trials"], 1, MAX_TRIALS)
        if c["min_trials"] > c["max_trials"]:
            raise ValueError(
                f"bayesian min_trials={c['min_trials']} exceeds max_trials={c['max_trials']}: "
                "the track would stop before its minimum"
            )
        c["target_sd"] = checks.real(
            "bayesian", "target_sd", c["target_sd"], 0.0, math.inf, low_open=True, allow_none=True
        )
        for key in ("lapse_rates", "false_alarm_rates"):
            c[key] = [
                checks.real("bayesian", f"{key}[{i}]", v, 0.0, 0.5, high_open=True)
                for i, v in enumerate(checks.sequence("bayesian", key, c[key], 1, MAX_RATES))
            ]
        if c["threshold_range"] is not None:
            lo, hi = self._pair("threshold_range", c["threshold_range"])
            if hi <= self.levels[0] or lo >= self.levels[-1]:
                raise ValueError(
                    f"bayesian threshold_range {[lo, hi]} does not overlap the ladder "
                    f"[{self.levels[0]}, {self.levels[-1]}]: no threshold it allows can be tested"
                )
        else:
            lo, hi = self.levels[0], self.levels[-1]
        if c["function"] == "weibull" and c["threshold_range"] is None and lo <= 0:
            if self.levels[-1] <= 0:
                raise ValueError(
                    f"bayesian function 'weibull' needs positive levels; the ladder is "
                    f"[{self.levels[0]}, {self.levels[-1]}]"
                )
            lo = min(v for v in self.levels if v > 0) / 2  # a Weibull threshold must be > 0
        c["threshold_range"] = self._range("threshold_range", lo, hi, positive=c["function"] == "weibull")
        s_lo, s_hi = (
            self._pair("slope_range", c["slope_range"])
            if c["slope_range"] is not None
            else DEFAULT_SLOPES[c["function"]]
        )
        c["slope_range"] = self._range("slope_range", s_lo, s_hi, positive=True)
        cells = (
            len(self.levels) * c["n_thresholds"] * c["n_slopes"] * len(c["lapse_rates"]) * len(c["false_alarm_rates"])
        )
        if cells > MAX_GRID_CELLS:
            raise ValueError(
                f"bayesian grid too large: {len(self.levels)} levels x n_thresholds={c['n_thresholds']} x "
                f"n_slopes={c['n_slopes']} x {len(c['lapse_rates'])} lapse_rates x "
                f"{len(c['false_alarm_rates'])} false_alarm_rates = {cells} cells, above {MAX_GRID_CELLS}"
            )
        if cells * c["max_trials"] > MAX_TRACK_WORK:
            raise ValueError(
                f"bayesian grid of {cells} cells with max_trials={c['max_trials']} is too slow a track "
                f"({cells * c['max_trials']:.3g} cell-trials, above {MAX_TRACK_WORK:.0e}); lower max_trials, "
                "n_thresholds or n_slopes"
            )

        self.thresholds = np.linspace(
            float(c["threshold_range"][0]), float(c["threshold_range"][1]), int(c["n_thresholds"])
        )
        self.slopes = np.geomspace(
            float(c["slope_range"][0]), float(c["slope_range"][1]), int(c["n_slopes"])
        )  # log-spaced: a log-uniform prior
        prior_sd = float(np.std(self.thresholds))  # the threshold's SD under the uniform prior
        if c["target_sd"] is not None and c["target_sd"] >= prior_sd and c["min_trials"] < 2:
            # At or above the prior's SD the criterion holds from the start: the track is then
            # min_trials long (a fixed length), and with min_trials < 2 it ends on its first answer.
            raise ValueError(
                f"bayesian target_sd={c['target_sd']} is at or above the threshold's prior SD ({prior_sd:.4g} on "
                f"threshold_range {c['threshold_range']}) with min_trials={c['min_trials']}: the track would stop "
                "after its first answer, before it could estimate anything; lower target_sd, or raise min_trials "
                "for a fixed length"
            )
        table_key = (
            tuple(self.levels), tuple(self.thresholds), tuple(self.slopes),
            tuple(c["lapse_rates"]), tuple(c["false_alarm_rates"]), c["function"],
        )  # fmt: skip
        self._table_key = table_key
        self._derive()
        self._history: list[list] = []

    # A restore template keeps the grid, not these (nor threshold_sd's kept value).
    _derived = ("_table", "_table_same", "_posterior", "_sd_of")

    def _derive(self) -> None:
        self._table = _likelihood_table(*self._table_key)
        self._table_same = _same_table(self._table_key)  # same bits as 1.0 - table, computed once per grid
        self._posterior = _prior(self._table_key)

    @staticmethod
    def _pair(key: str, value: Any) -> tuple[float, float]:
        """A [low, high] setting: a list of two finite numbers."""
        lo, hi = checks.sequence("bayesian", key, value, 2, 2)
        return (
            checks.real("bayesian", f"{key}[0]", lo, -math.inf, math.inf),
            checks.real("bayesian", f"{key}[1]", hi, -math.inf, math.inf),
        )

    @staticmethod
    def _range(key: str, lo: Any, hi: Any, positive: bool) -> list[float]:
        lo, hi = float(lo), float(hi)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (positive and lo <= 0):
            raise ValueError(
                f"bayesian {key} must be [low, high] with low < high{' and low > 0' if positive else ''}, got {[lo, hi]}"
            )
        return [lo, hi]

    def _apply(self, index: int, response_different: bool) -> None:
        # The one place the posterior changes: live updates and restores replay it identically.
        like = self._table[index] if response_different else self._table_same[index]
        post = self._posterior * like
        post /= post.sum()  # in place: the same IEEE division as post / post.sum()
        self._posterior = post

    # -- posterior summaries ------------------------------------------------------
    def threshold_posterior(self) -> np.ndarray:
        """Marginal posterior over ``self.thresholds`` (a new array)."""
        return self._posterior.sum(axis=(1, 2))

    def threshold_sd(self) -> float:
        """Posterior SD of the threshold (level units). Kept for the posterior it was computed
        on: ``finished``, ``stop_reason`` and the progress estimate ask for it several times
        per answer, between which the posterior (replaced, never changed in place: ``_apply``)
        stays the same object."""
        post = self._posterior
        kept = self.__dict__.get("_sd_of")
        if kept is not None and kept[0] is post:
            return kept[1]
        w = post.sum(axis=(1, 2))
        mean = float(w @ self.thresholds)
        sd = float(math.sqrt(max(float(w @ (self.thresholds - mean) ** 2), 0.0)))
        self._sd_of = (post, sd)
        return sd

    # -- contract ---------------------------------------------------------------
    @property
    def n_trials(self) -> int:
        return len(self._history)

    @property
    def fewest_trials(self) -> int:
        """Fewest trials this track can take before it finishes."""
        c = self.config
        return c["max_trials"] if c["target_sd"] is None else max(c["min_trials"], 1)

    @property
    def trial_bound(self) -> int:
        """Most trials this track can take."""
        return self.config["max_trials"]

    @property
    def stop_reason(self) -> str | None:
        """ "precision" (posterior SD reached target_sd), "max_trials", or None while running."""
        c = self.config
        if (
            c["target_sd"] is not None
            and self.n_trials >= max(c["min_trials"], 1)
            and self.threshold_sd() <= c["target_sd"]
        ):
            return "precision"
        if self.n_trials >= c["max_trials"]:
            return "max_trials"
        return None

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def next_level(self) -> float | None:
        if self.finished:
            return None
        # Expected entropy after presenting each level x (all levels at once):
        #   E[H] = −Σ m_d log m_d + p_d log p_d − Σ m_s log m_s + p_s log p_s,
        # with m_d = Σ_nuisance post·P(d|x), m_s = marginal − m_d and p_· their totals.
        post = self._posterior
        m_d = np.einsum("ltsn,tsn->lts", self._table, post)
        m_s = post.sum(axis=2)[None] - m_d
        if self.config["entropy_over"] == "threshold":
            m_d, m_s = m_d.sum(axis=2), m_s.sum(axis=2)
        axes = tuple(range(1, m_d.ndim))
        p_d = np.clip(m_d.sum(axis=axes), 1e-300, None)
        p_s = np.clip(m_s.sum(axis=axes), 1e-300, None)
        m_s = np.maximum(m_s, 0.0)  # guard the subtraction's rounding
        expected = -_neg_entropy_sum(m_d, axes) + p_d * np.log(p_d) - _neg_entropy_sum(m_s, axes) + p_s * np.log(p_s)
        return self.levels[int(np.argmin(expected))]

    def update(self, level: float, response_different: bool) -> None:
        if self.finished:
            raise ValueError("bayesian track has finished; it takes no more answers")
        index = self._snap(level)
        self._apply(index, bool(response_different))
        self._history.append([self.levels[index], int(bool(response_different))])

    def estimate(self) -> float | None:
        """Posterior mean (or mode) of the threshold (F = 0.5 level); None before any answer."""
        if not self._history:
            return None
        w = self.threshold_posterior()
        if self.config["estimate"] == "mode":
            return float(self.thresholds[int(np.argmax(w))])
        return float(w @ self.thresholds)

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "levels": list(self.levels),
            "config": dict(self.config),
            "history": [list(h) for h in self._history],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PsiMethod:
        if state.get("name") != cls.name:
            raise ValueError(f"not a bayesian state: name={state.get('name')!r}")
        proc = cls._fresh(state["levels"], state["config"])  # the constructor's checks, once per ladder and options
        rung = {level: i for i, level in enumerate(proc.levels)}  # stored levels are rungs: skip the search
        answers = []  # (rung, answer) as 2 * rung + answer
        for level, resp in state["history"]:
            index = rung.get(level) if type(level) is float else None
            if index is None:
                index = proc._snap(level)
            answers.append(2 * index + bool(resp))
            proc._history.append([proc.levels[index], int(bool(resp))])
        proc._replay(answers)
        return proc

    def _replay(self, answers: list[int]) -> None:
        """Apply ``answers`` (2 * rung + answer) to the prior, in order. A posterior replayed
        before on this grid (the same answers, or all but the last: the state before the
        last answer) is taken from ``_posteriors`` instead of replayed: the same
        multiplications in the same order, so the same bits."""
        if not answers:
            return
        table = self._table
        done = tuple(answers)
        start = 0
        for known in (done, done[:-1]):
            entry = _posteriors.get((id(table), known))
            if entry is not None and entry[0]() is table:  # the very table, still alive
                self._posterior, start = entry[1], len(known)
                break
        if start == len(done):
            return
        for code in done[start:]:
            self._apply(code >> 1, bool(code & 1))
        _remember_posterior(table, done, self._posterior)
