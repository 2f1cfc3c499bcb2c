"""Maximum-likelihood psychometric functions for same/different judgments.

Model (jndlab convention, used everywhere):

    P(different | x) = gamma + (1 - gamma - lambda) * F(x; threshold, slope)

gamma is the false-alarm (guess) rate, lambda the lapse rate, F a logistic or
Weibull CDF: the psychometric function of ``listening_test.procedures.observer`` (its
one home; the simulated listeners and the Bayesian procedure use the same). The threshold (JND) is the x where F = 0.5, i.e. P is halfway between
gamma and 1 - lambda.

- logistic: F = 1 / (1 + exp(-slope * (x - threshold)))            (any real x)
- weibull:  F = 1 - exp(-ln2 * (x / threshold) ** slope)             (x > 0)

Both are written as F(z) with z = slope * (u - m): u = x, m = threshold for the
logistic; u = log x, m = log threshold for the Weibull (a Gumbel CDF in log x).

Fits run through one batched Fisher-scoring / Levenberg-Marquardt solver over
per-level binomial counts (``analysis.psychometric_solver``), so a bootstrap of B
replicates is one vectorised fit rather than B scipy calls; the interval, separation
and bootstrap steps are in ``analysis.psychometric_intervals``. Identical-pair
("catch") trials carry information about gamma only: P(different | identical) = gamma.

Small samples and edge cases return ``PsychometricFit(estimable=False, reason=...)``
instead of a wild number.

Threshold interval: penalised profile likelihood (chosen on evidence, see below).
    The interval is {m : 2 [min_nuisance pNLL(m) - min pNLL] <= chi2_1(ci_level)} with
    pNLL = NLL + the negative log of psignifit 4's default priors on the nuisance
    parameters: its width prior (flat in the 5-95 % width between twice the smallest
    gap between tested levels and the tested range, cosine fall-offs to 0 at that gap
    and at 3x the range; ``psychometric_solver.width_penalty``) and a Beta(1, 20) prior on the lapse rate
    (psignifit's default is Beta(1, 10); see the evidence). The nuisance parameters
    (slope, lapse, and gamma when it is free) are re-minimised at every m on a grid over
    the tested range (one batched solve), ends refined by interpolation. The point
    estimate stays the unpenalised ML estimate, and the interval is widened to hold it.
    Why a profile: (1) it holds the estimate (the percentile bootstrap does not: with
    3 trials per level 9 of 97 small simulated datasets had the estimate outside its
    own percentile interval, issue 15); (2) on separated data the profile is flat over
    the separating gap, so the interval is that gap widened by what the data can
    exclude, instead of a zero-width bootstrap interval; (3) an end the data cannot
    close within the tested range comes back open (-inf / +inf, "below/above the
    tested range") instead of an extrapolated number; (4) no random numbers, one
    batched solve (~0.1-0.3 s). Why the penalties: the plain profile undercovered at
    small n, because with 3-9 tested levels the ML slope is often far too steep and
    the profile then rises within a few levels of the estimate. A flat-in-width prior
    is a density e^{-s} in s = log slope, so a steep slope costs one likelihood unit
    per e-fold and the profile can no longer buy a narrow interval with it; at large n
    the penalty is negligible against the likelihood. The lapse rate is barely
    identified by staircase data (they sit near the threshold), and as a free nuisance
    it made intervals conservative at 400 adaptive trials (coverage 0.98-0.99 under
    Beta(1, 10), 0.965 under Beta(1, 20), 400 datasets). Rejected: a hard slope floor
    tied to the level spacing and a simulation-calibrated cutoff (both tried, neither
    fixed the small-n cells), the percentile bootstrap (0.85 at 42 trials).
    Evidence, benchmarks/psychometric_vs_psignifit.py --reps 0 --jndlab-reps 300
    --dpam none (true threshold uniform in 35..75, logistic scale 8, gamma 0.05 known,
    lapse 0.02 fitted; 300 datasets per cell, SE of a coverage ~0.013; psignifit 4 at
    its defaults on 10 datasets per cell in brackets; width: median, open ends clipped
    to the 0..100 level scale):

        trials             20            40            100           200           400
        constant  cover   0.940         0.947         0.937         0.950         0.953
                  width   35.5 (36.4)   21.9 (29.5)   13.6 (15.7)   9.68 (11.0)   6.78 (8.98)
        adaptive  cover   0.933         0.937         0.963         0.930         0.967
                  width   54.3 (25.3)   14.5 (17.7)   8.30 (13.1)   5.49 (9.37)   4.19 (7.05)

    (unpenalised profile, same design, 150 datasets: constant 0.927/0.900/0.933/0.940/
    0.967, adaptive 0.827/0.920/0.947/0.967/0.987). The one cell where the width
    exceeds psignifit's is the 20-trial staircase (median 8 levels, 1-3 trials each):
    59 % of its intervals have an end the data cannot close inside the tested range,
    which jndlab reports open (counted to the end of the 0..100 scale); psignifit
    closes such ends with its threshold prior, which by assumption puts the threshold
    within half a range of the tested levels.
    (Venzon & Moolgavkar 1988, Applied Statistics 37, for profile intervals; Schuett,
    Harmeling, Macke & Wichmann 2016, Vision Research 122, for psignifit 4's priors;
    Wichmann & Hill 2001, Perception & Psychophysics 63(8), for percentile bootstrap
    undercoverage at small N.) With ``n_boot`` > 0 a bootstrap still runs for the slope
    interval and the percentile threshold interval is kept beside it
    (``threshold_ci_bootstrap``).

Separation: decided from the data, not from where the optimiser stopped. The
closure of the model family contains step functions (slope -> infinity): P = gamma
below a cut between two tested levels and 1 - lambda above it, with gamma and
lambda at their constrained ML values. The best step's likelihood is computed in
closed form for every cut; when no finite-slope fit beats it, the data are
(quasi-)separated, the threshold is not a number but a bracket between two tested
levels (``separated=True``, ``threshold_bracket``, threshold NaN) and the interval
is the profile interval, which contains the bracket. Cuts are only considered
across gaps of at least 1% of the tested range (continuous x, such as DPAM's
level-vector distances, has near-duplicate levels between which a step says
nothing useful).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from listening_test.procedures.observer import psychometric

from .formatting import describe_threshold
from .physical import PhysicalMap, map_threshold, physical_mapper
from .psychometric_intervals import bootstrap_replicates, profile_interval, step_nll
from .psychometric_solver import (
    MIN_GAP_FRAC,
    MODELS,
    FitSetup,
    LevelCounts,
    binom_nll,
    deviance,
    logit,
    solve,
    standard_cdf,
)

__all__ = ["MODELS", "PsychometricFit", "fit_groups", "fit_psychometric", "not_estimable"]

SEPARATION_TOL = 1e-3  # NLL units: a finite slope must beat the best step by more to count as a fit
PROFILE_METHOD = "profile likelihood"


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class PsychometricFit:
    """Result of one fit. When ``estimable`` is False, ``reason`` says why and
    threshold/slope are NaN (the counts are still filled in).

    Units: ``threshold``, its interval and bracket on the x (level) axis;
    ``threshold_physical*`` in the physical unit of ``to_physical``; ``slope`` per level
    unit (logistic) or the dimensionless Weibull shape; rates in [0, 1].
    """

    estimable: bool
    reason: str
    model: str
    threshold: float = math.nan
    slope: float = math.nan
    guess_rate: float = math.nan
    lapse_rate: float = math.nan
    threshold_ci: tuple[float, float] = (math.nan, math.nan)
    threshold_ci_method: str = ""
    separated: bool = False
    threshold_bracket: tuple[float, float] = (math.nan, math.nan)
    threshold_ci_bootstrap: tuple[float, float] = (math.nan, math.nan)
    slope_ci: tuple[float, float] = (math.nan, math.nan)
    ci_level: float = math.nan
    n_boot: int = 0
    boot_outside_range_frac: float = math.nan
    threshold_physical: float = math.nan
    threshold_physical_ci: tuple[float, float] = (math.nan, math.nan)
    threshold_physical_bracket: tuple[float, float] = (math.nan, math.nan)
    n_trials: int = 0
    n_different: int = 0
    n_catch: int = 0
    n_catch_different: int = 0
    n_levels: int = 0
    x_min: float = math.nan
    x_max: float = math.nan
    neg_log_likelihood: float = math.nan
    lr_pvalue: float = math.nan
    notes: tuple[str, ...] = field(default_factory=tuple)

    def predict(self, x) -> np.ndarray:
        """P(different) at levels x (any shape) under the fitted parameters: NaN if not
        estimable; a step at the middle of the bracket (geometric middle for the Weibull)
        when the data are separated; else ``observer.psychometric``."""
        x = np.asarray(x, dtype=float)
        if not self.estimable:
            return np.full(x.shape, np.nan)
        if self.separated:
            lo, hi = self.threshold_bracket
            cut = 0.5 * (lo + hi) if self.model == "logistic" else math.sqrt(lo * hi)
            return np.where(x < cut, self.guess_rate, 1.0 - self.lapse_rate)
        return psychometric(x, self.threshold, self.slope, self.guess_rate, self.lapse_rate, self.model)

    def threshold_text(self, digits: int = 3, unit: str = "") -> str:
        """The threshold as a reader should see it: "44.9, CI [40.1, 49.8]", "between 40
        and 50 (separated data), CI [37.2, 52.9]", "above 100 (not estimable)", "< 20.2"
        ends (``analysis.formatting.describe_threshold``)."""
        return describe_threshold(
            self.threshold,
            self.threshold_ci,
            self.threshold_bracket,
            estimable=self.estimable,
            separated=self.separated,
            digits=digits,
            unit=unit,
        )

    def as_dict(self) -> dict:
        """A flat row: intervals split into ``*_low``/``*_high``, notes joined by "; ",
        plus ``threshold_text``."""
        d = asdict(self)
        d["threshold_text"] = self.threshold_text()
        for key in (
            "threshold_ci",
            "slope_ci",
            "threshold_physical_ci",
            "threshold_bracket",
            "threshold_ci_bootstrap",
            "threshold_physical_bracket",
        ):
            lo, hi = d.pop(key)
            d[f"{key}_low"], d[f"{key}_high"] = lo, hi
        d["notes"] = "; ".join(self.notes)
        return d


def not_estimable(reason: str, model: str = "logistic", **fields_) -> PsychometricFit:
    """A ``PsychometricFit`` with ``estimable=False``, ``reason`` and whatever ``fields_``
    are known (counts, a bracket beyond the tested range, fitted rates)."""
    return PsychometricFit(estimable=False, reason=reason, model=model, **fields_)


# ----------------------------------------------------------------------------- the steps of one fit


def _check_options(model, guess, lapse, guess_max, lapse_max, n_boot, bootstrap, rng) -> None:
    """Raises ValueError for an option outside its domain (see ``fit_psychometric``)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if bootstrap not in ("parametric", "nonparametric"):
        raise ValueError(f"bootstrap must be 'parametric' or 'nonparametric', got {bootstrap!r}")
    if not 0.0 < guess_max < 1.0 or not 0.0 < lapse_max < 0.5:
        raise ValueError("guess_max must be in (0, 1) and lapse_max in (0, 0.5)")
    if isinstance(guess, str):
        if guess not in ("fit", "catch"):
            raise ValueError(f"guess must be a number, 'fit' or 'catch', got {guess!r}")
    elif not 0.0 <= guess <= guess_max:
        raise ValueError(f"fixed guess rate {guess} outside [0, {guess_max}]")
    if isinstance(lapse, str):
        if lapse != "fit":
            raise ValueError(f"lapse must be a number or 'fit', got {lapse!r}")
    elif not 0.0 <= lapse <= lapse_max:
        raise ValueError(f"fixed lapse rate {lapse} outside [0, {lapse_max}]")
    if n_boot and rng is None:
        raise ValueError("n_boot > 0 needs rng (a numpy.random.Generator); there is no global random state")


def _as_binary(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))][0]
        raise ValueError(f"{name} must be 0/1 responses, found {bad!r}")
    return arr.astype(np.int64)


def _check_data(x, y, catch, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x float, y 0/1, catch 0/1) as 1-D arrays. Raises ValueError for malformed input."""
    x = np.asarray(x, dtype=float)
    y = _as_binary("y", y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or infinite levels")
    if model == "weibull" and (x <= 0).any():
        raise ValueError("the Weibull model needs levels x > 0 (treat level-0 pairs as catch trials)")
    return x, y, _as_binary("catch", [] if catch is None else catch)


def _counts(x: np.ndarray, y: np.ndarray, c: np.ndarray) -> dict[str, Any]:
    """The count fields every ``PsychometricFit`` reports, estimable or not."""
    return dict(
        n_trials=int(x.size),
        n_different=int(y.sum()),
        n_catch=int(c.size),
        n_catch_different=int(c.sum()),
        n_levels=int(np.unique(x).size),
        x_min=float(x.min()) if x.size else math.nan,
        x_max=float(x.max()) if x.size else math.nan,
    )


def _too_little_data(
    counts: dict[str, Any], guess, min_trials: int, min_levels: int
) -> tuple[str, dict[str, Any]] | None:
    """Why the data cannot be fitted at all, with a bracket when the answers place the
    threshold beyond the tested range; None when a fit is worth trying."""
    n_trials, n_different, n_levels = counts["n_trials"], counts["n_different"], counts["n_levels"]
    if n_trials == 0:
        return "no trials", {}
    if n_trials < min_trials:
        return f"only {n_trials} trials (need >= {min_trials})", {}
    if n_levels == 1:
        return "single level tested: no slope or threshold can be separated", {}
    if n_levels < min_levels:
        return f"only {n_levels} distinct levels (need >= {min_levels})", {}
    if n_different == 0:
        return (
            f"all responses 'same': threshold above the tested range (> {counts['x_max']:.4g})",
            dict(threshold_bracket=(counts["x_max"], math.inf)),
        )
    if n_different == n_trials:
        return (
            f"all responses 'different': threshold below the tested range (< {counts['x_min']:.4g})",
            dict(threshold_bracket=(-math.inf, counts["x_min"])),
        )
    if guess == "catch" and counts["n_catch"] == 0:
        return "guess='catch' but there are no identical-pair trials", {}
    return None


@dataclass(frozen=True)
class _Estimate:
    """The unpenalised maximum-likelihood fit: theta (1, P) and its parameters."""

    theta: np.ndarray
    nll: float
    m: float  # location, u units
    slope: float  # beta
    guess_rate: float
    lapse_rate: float
    n_params: int
    p_hat: np.ndarray  # (L,) fitted P(different) at the tested levels
    s_max: float  # upper bound of the log-slope in the unpenalised fit

    def threshold(self, setup: FitSetup) -> float:
        return setup.counts.to_x(self.m)


def _point_estimate(setup: FitSetup) -> _Estimate:
    """Multi-start (5 locations x 3 slopes over the tested range) batched ML fit; the best row."""
    c = setup.counts
    m_starts = c.u_min + c.span * np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    s_starts = np.log(np.array([2.0, 8.0, 30.0]) / c.span)
    mm, ss = (a.ravel() for a in np.meshgrid(m_starts, s_starts))
    S = mm.size
    starts = [mm, ss]
    if setup.guess == "fit":
        g_start = np.clip(c.catch_rate if c.n0 else 0.05, 0.01, 0.9 * setup.guess_max)
        starts.append(np.full(S, logit(g_start / setup.guess_max)))
    if setup.lapse == "fit":
        starts.append(np.full(S, logit(0.2)))
    prob = setup.observed(S)
    theta_all, nll_all = solve(prob, np.stack(starts, axis=1))
    best = int(np.argmin(nll_all))
    theta = theta_all[best : best + 1]
    m, s, g, lam = (float(a[0]) for a in prob.unpack(theta))
    beta = math.exp(s)
    f, _ = standard_cdf(c.model, beta * (c.u - m))
    return _Estimate(
        theta, float(nll_all[best]), m, beta, g, lam, prob.n_params, g + (1.0 - g - lam) * f, prob.s_bounds[1]
    )


def _trend_pvalue(setup: FitSetup, nll_hat: float) -> float:
    """Likelihood-ratio test (2 df) of the fit against "P(different) does not depend on level"."""
    c = setup.counts
    g_null = float(setup.guess) if not isinstance(setup.guess, str) else c.catch_rate
    nll_null = binom_nll(c.k, c.n, c.k.sum() / c.n.sum()) + (binom_nll(c.k0, c.n0, g_null) if c.n0 else 0.0)
    lr = max(0.0, 2.0 * (nll_null - nll_hat))
    return float(stats.chi2.sf(lr, df=2))


def _goodness_of_fit(setup: FitSetup, est: _Estimate, gof_alpha: float) -> tuple[str | None, str]:
    """(reason the fit is refused or None, note). The deviance test runs only when every
    level has >= 5 trials and there are more levels than free parameters."""
    c = setup.counts
    n_levels = c.levels.size
    if not (c.n.min() >= 5 and n_levels > est.n_params):
        return None, "goodness of fit not tested (fewer than 5 trials at some level)"
    dev = deviance(c.k, c.n, est.p_hat)
    df = n_levels - est.n_params
    gof_p = float(stats.chi2.sf(dev, df=df))
    if gof_p < gof_alpha:
        return (
            f"poor fit: responses are not a monotone sigmoid of level (deviance {dev:.1f} on {df} df, p = {gof_p:.2g})"
        ), ""
    return None, f"deviance {dev:.1f} on {df} df (p = {gof_p:.2g})"


def _separation(setup: FitSetup, nll_hat: float) -> tuple[bool, tuple[float, float]]:
    """Whether a step between two tested levels fits as well as any finite slope, and the
    bracket of the tied best cuts. Cuts across gaps under 1% of the tested range are not
    considered (they bracket nothing a reader can use)."""
    c = setup.counts
    nll, cuts = step_nll(setup)
    nll = np.where(np.diff(c.u) >= MIN_GAP_FRAC * c.span, nll, np.inf)
    best_step = float(nll.min())
    separated = bool(np.isfinite(best_step)) and nll_hat >= best_step - SEPARATION_TOL
    if not separated:
        return False, (math.nan, math.nan)
    tied = np.flatnonzero(nll <= best_step + SEPARATION_TOL)
    return True, (float(c.levels[cuts[tied.min()]]), float(c.levels[cuts[tied.max()] + 1]))


def _threshold_interval(setup: FitSetup, est: _Estimate, separated: bool, ci_level: float) -> tuple[float, float]:
    """The penalised profile-likelihood interval of the threshold, in x units (open ends infinite)."""
    theta_ref = est.theta.copy()
    if separated:  # start the nuisance parameters from the step's, the slope at its bound
        theta_ref[0, 1] = est.s_max
    free_guess = setup.guess == "catch"
    if free_guess:
        # gamma was fixed at the identical pairs' rate for the estimate; in the profile it is a
        # nuisance parameter informed by those same trials, so its uncertainty reaches the interval
        g0 = logit(np.clip(setup.counts.catch_rate, 1e-4, 0.999 * setup.guess_max) / setup.guess_max)
        theta_ref = np.insert(theta_ref, 2, g0, axis=1)
    (lo_u, hi_u), _ = profile_interval(
        lambda B: setup.observed(B, free_guess=free_guess, prior=True),
        setup,
        theta_ref,
        est.m,
        ci_level,
        setup.s_prior_bounds,
    )
    return setup.counts.to_x(lo_u), setup.counts.to_x(hi_u)


def _bootstrap_intervals(
    setup: FitSetup, est: _Estimate, n_boot: int, kind: str, rng, ci_level: float, separated: bool
) -> tuple[tuple[float, float], tuple[float, float], float, str | None]:
    """(slope interval, percentile threshold interval in x units, share of replicate
    thresholds outside the tested range, note or None) from ``n_boot`` replicates."""
    c = setup.counts
    thr_b, beta_b = bootstrap_replicates(setup, est.theta, est.p_hat, est.guess_rate, n_boot, kind, rng)
    outside = float(np.mean((thr_b < c.u_min) | (thr_b > c.u_max)))
    q = [(1.0 - ci_level) / 2.0, (1.0 + ci_level) / 2.0]
    lo, hi = np.quantile(thr_b, q)
    lo = lo if lo >= c.u_min else -math.inf
    hi = hi if hi <= c.u_max else math.inf
    boot_ci = (float(c.to_x(lo)), float(c.to_x(hi)))
    slope_lo, slope_hi = (float(v) for v in np.quantile(beta_b, q))
    slope_ci = (slope_lo, math.inf) if separated else (slope_lo, slope_hi)
    note = (
        f"{outside:.0%} of bootstrap thresholds fell outside the tested range"
        if outside > (1.0 - ci_level) / 2.0
        else None
    )
    return slope_ci, boot_ci, outside, note


# ----------------------------------------------------------------------------- public fitting


def fit_psychometric(
    x,
    y,
    *,
    catch=None,
    model: str = "logistic",
    guess: float | str = 0.0,
    lapse: float | str = "fit",
    guess_max: float = 0.5,
    lapse_max: float = 0.1,
    n_boot: int = 0,
    ci_level: float = 0.95,
    bootstrap: str = "parametric",
    rng: np.random.Generator | None = None,
    to_physical=None,
    min_trials: int = 20,
    min_levels: int = 3,
    alpha: float = 0.05,
    gof_alpha: float = 0.001,
) -> PsychometricFit:
    """Fit P(different | x) by maximum likelihood (method: the module docstring).

    x, y: levels (N,) and 0/1 responses (N,) of the perturbed (non-identical) trials. x
        may be a level scale or a log physical scale; the Weibull needs x > 0.
    catch: 0/1 responses (M,) on identical pairs; they inform gamma only.
    guess: a number (fixed gamma), "fit" (free in [0, guess_max], catch trials in the
        likelihood) or "catch" (fixed at the catch trials' false-alarm rate; the
        bootstrap re-estimates it per replicate so its uncertainty propagates).
    lapse: a number (fixed lambda) or "fit" (free in [0, lapse_max]).
    ci_level: level of the threshold's penalised profile-likelihood interval (always
        computed; see the module docstring for the method and its measured coverage).
        With guess="catch" gamma is free in the profile, informed by the identical
        pairs, so its uncertainty widens the interval.
    n_boot: bootstrap replicates (0 = none; needs ``rng``) for the slope interval and
        the percentile threshold interval kept for comparison (``threshold_ci_bootstrap``).
    bootstrap: "parametric" (simulate the fitted observer at the tested levels) or
        "nonparametric" (resample trials with replacement).
    to_physical: callable or table (see ``analysis.physical.physical_mapper``) from x
        to physical units; the threshold, its interval and its bracket are reported in
        both (``map_interval``: decreasing maps swap the ends, open ends stay open).

    Returns a PsychometricFit: ``threshold_ci`` always holds the estimate (or the
    bracket); an end the data cannot close inside the tested range is -inf / +inf.
    ``separated=True`` (threshold NaN, slope inf, ``threshold_bracket`` = the two
    tested levels around the step) when a step fits as well as any finite slope.
    ``estimable=False`` with a reason for: no/too few trials, fewer than
    ``min_levels`` levels, all responses equal (bracket beyond the range), no
    reliable increase with level (likelihood-ratio test at ``alpha``), a poor fit
    when the design has >= 5 trials per level (deviance test at ``gof_alpha``), or a
    threshold outside the tested range (bracket beyond the range, profile interval
    kept in ``threshold_ci``).

    Raises:
        ValueError: an unknown model or bootstrap kind, rates or bounds outside their
            domain, n_boot without rng, malformed x/y/catch (shapes, non-0/1 answers,
            NaN levels, levels <= 0 for the Weibull), a physical table that is not
            strictly monotone.
    """
    _check_options(model, guess, lapse, guess_max, lapse_max, n_boot, bootstrap, rng)
    mapper: PhysicalMap | None = None if to_physical is None else physical_mapper(to_physical)
    x, y, c = _check_data(x, y, catch, model)
    counts = _counts(x, y, c)

    def refuse(reason: str, **extra) -> PsychometricFit:
        return not_estimable(reason, model=model, **counts, **extra)

    too_little = _too_little_data(counts, guess, min_trials, min_levels)
    if too_little is not None:
        return refuse(too_little[0], **too_little[1])

    setup = FitSetup.build(LevelCounts.tabulate(model, x, y, c.size, int(c.sum())), guess, lapse, guess_max, lapse_max)
    est = _point_estimate(setup)
    lr_p = _trend_pvalue(setup, est.nll)
    fitted: dict[str, Any] = dict(
        guess_rate=est.guess_rate, lapse_rate=est.lapse_rate, neg_log_likelihood=est.nll, lr_pvalue=lr_p
    )
    if lr_p > alpha:
        return refuse(
            f"no reliable increase of P(different) with level (likelihood-ratio p = {lr_p:.2g}): "
            "flat or non-monotone responses",
            **fitted,
        )
    poor, gof_note = _goodness_of_fit(setup, est, gof_alpha)
    if poor:
        return refuse(poor, **fitted)
    notes = [gof_note]

    separated, bracket = _separation(setup, est.nll)
    if separated:
        notes.append(
            f"responses separated between levels {bracket[0]:.4g} and {bracket[1]:.4g}: "
            "a step fits as well as any finite slope, so the threshold is only bracketed"
        )
    thr_ci = _threshold_interval(setup, est, separated, ci_level)
    threshold = est.threshold(setup)
    levels = setup.counts.levels
    if not separated and not setup.counts.u_min <= est.m <= setup.counts.u_max:
        above = est.m > setup.counts.u_max
        return refuse(
            f"threshold {threshold:.4g} outside the tested range [{levels[0]:.4g}, {levels[-1]:.4g}]",
            threshold_bracket=(float(levels[-1]), math.inf) if above else (-math.inf, float(levels[0])),
            threshold_ci=thr_ci,
            threshold_ci_method=PROFILE_METHOD,
            ci_level=ci_level,
            **fitted,
        )
    if separated:  # the interval holds the bracket; there is no point estimate
        thr_ci = (min(thr_ci[0], bracket[0]), max(thr_ci[1], bracket[1]))
        threshold_out, slope_out = math.nan, math.inf
    else:  # the interval holds the estimate
        thr_ci = (min(thr_ci[0], threshold), max(thr_ci[1], threshold))
        threshold_out, slope_out = threshold, est.slope

    slope_ci = boot_ci = (math.nan, math.nan)
    outside = math.nan
    if n_boot:
        slope_ci, boot_ci, outside, note = _bootstrap_intervals(setup, est, n_boot, bootstrap, rng, ci_level, separated)
        if note:
            notes.append(note)
    phys, phys_ci, phys_bracket = map_threshold(
        mapper, threshold_out, thr_ci, bracket, float(levels[0]), float(levels[-1])
    )
    return PsychometricFit(
        estimable=True,
        reason="",
        model=model,
        threshold=threshold_out,
        slope=slope_out,
        threshold_ci=(float(thr_ci[0]), float(thr_ci[1])),
        threshold_ci_method=PROFILE_METHOD,
        separated=bool(separated),
        threshold_bracket=bracket,
        threshold_ci_bootstrap=boot_ci,
        slope_ci=slope_ci,
        ci_level=ci_level,
        n_boot=int(n_boot),
        boot_outside_range_frac=outside,
        threshold_physical=phys,
        threshold_physical_ci=phys_ci,
        threshold_physical_bracket=phys_bracket,
        notes=tuple(notes),
        **counts,
        **fitted,
    )


def fit_groups(
    df: pd.DataFrame,
    by: Sequence[str] | str | None = None,
    *,
    x: str = "level",
    y: str = "response_different",
    catch_col: str | None = None,
    **fit_kwargs,
) -> pd.DataFrame:
    """Fit one psychometric function per group of a tidy judgment table.

    ``by``: column name(s) to group on (e.g. ["family"], ["family", "reference"],
    ["participant"]); None or [] fits the pooled data. Rows where ``catch_col`` is
    true are identical-pair trials (their x is ignored) and inform gamma.
    Extra keyword arguments go to ``fit_psychometric`` (pass one ``rng``; groups are
    fitted in sorted order, so results are reproducible for a given seed).
    Returns one row per group: the group keys followed by ``PsychometricFit.as_dict()``.

    Raises:
        ValueError: a named column is missing, or as ``fit_psychometric``.
    """
    by = [by] if isinstance(by, str) else list(by or [])
    for col in [*by, y, *([catch_col] if catch_col else [])]:
        if col not in df.columns:
            raise ValueError(f"fit_groups: column {col!r} not in table (has {list(df.columns)})")
    groups = [((), df)] if not by else df.groupby(by, sort=True, dropna=False)
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        is_catch = g[catch_col].astype(bool).to_numpy() if catch_col else np.zeros(len(g), bool)
        fit = fit_psychometric(
            g.loc[~is_catch, x].to_numpy(float),
            g.loc[~is_catch, y].to_numpy(),
            catch=g.loc[is_catch, y].to_numpy() if catch_col else None,
            **fit_kwargs,
        )
        rows.append({**dict(zip(by, key)), **fit.as_dict()})
    if not by:
        rows[0] = {"group": "pooled", **rows[0]}
    return pd.DataFrame(rows)
