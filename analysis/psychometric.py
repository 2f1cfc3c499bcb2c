"""Maximum-likelihood psychometric functions for same/different judgments.

Model (jndlab convention, used everywhere):

    P(different | x) = gamma + (1 - gamma - lambda) * F(x; threshold, slope)

gamma is the false-alarm (guess) rate, lambda the lapse rate, F a logistic or
Weibull CDF. The threshold (JND) is the x where F = 0.5, i.e. P is halfway between
gamma and 1 - lambda.

- logistic: F = 1 / (1 + exp(-slope * (x - threshold)))            (any real x)
- weibull:  F = 1 - exp(-ln2 * (x / threshold) ** slope)             (x > 0)

Both are written as F(z) with z = slope * (u - m): u = x, m = threshold for the
logistic; u = log x, m = log threshold for the Weibull (a Gumbel CDF in log x).

Fits run through one batched Fisher-scoring / Levenberg-Marquardt solver over
per-level binomial counts, so a bootstrap of B replicates is one vectorised fit
rather than B scipy calls. Identical-pair ("catch") trials carry information
about gamma only: P(different | identical) = gamma.

Small samples and edge cases return ``PsychometricFit(estimable=False, reason=...)``
instead of a wild number.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

MODELS = ("logistic", "weibull")
_LN2 = math.log(2.0)
_P_EPS = 1e-12          # keeps log(p) finite when gamma = 0 or lambda = 0
_Z_CLIP = 35.0          # exp(35) is finite; F is saturated far before that
_SIGMOID_CLIP = 14.0    # unconstrained gamma/lambda coordinates live in [-14, 14]


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class PsychometricFit:
    """Result of one fit. When ``estimable`` is False, ``reason`` says why and
    threshold/slope are NaN (the counts are still filled in)."""

    estimable: bool
    reason: str
    model: str
    threshold: float = math.nan
    slope: float = math.nan
    guess_rate: float = math.nan
    lapse_rate: float = math.nan
    threshold_ci: tuple[float, float] = (math.nan, math.nan)
    slope_ci: tuple[float, float] = (math.nan, math.nan)
    ci_level: float = math.nan
    n_boot: int = 0
    boot_outside_range_frac: float = math.nan
    threshold_physical: float = math.nan
    threshold_physical_ci: tuple[float, float] = (math.nan, math.nan)
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
        """P(different) at x under the fitted parameters (NaN if not estimable)."""
        x = np.asarray(x, dtype=float)
        if not self.estimable:
            return np.full(x.shape, np.nan)
        u, m = (x, self.threshold) if self.model == "logistic" else (_safe_log(x), math.log(self.threshold))
        f, _ = _cdf(self.model, self.slope * (u - m))
        return self.guess_rate + (1.0 - self.guess_rate - self.lapse_rate) * f

    def as_dict(self) -> dict:
        d = asdict(self)
        for key in ("threshold_ci", "slope_ci", "threshold_physical_ci"):
            lo, hi = d.pop(key)
            d[f"{key}_low"], d[f"{key}_high"] = lo, hi
        d["notes"] = "; ".join(self.notes)
        return d


def not_estimable(reason: str, model: str = "logistic", **counts) -> PsychometricFit:
    return PsychometricFit(estimable=False, reason=reason, model=model, **counts)


# ----------------------------------------------------------------------------- physical mapping


def physical_mapper(table) -> Callable[[np.ndarray], np.ndarray]:
    """Turn a level->physical table into a callable for ``fit_psychometric(to_physical=...)``.

    ``table``: a callable (returned as is), a mapping {level: value}, a pair of
    sequences (levels, values), or a DataFrame whose first two columns are level
    and value. Values must be strictly monotone in level so that confidence
    intervals map onto confidence intervals; levels outside the table give NaN
    (no silent extrapolation). Interpolation is linear between table rows.
    """
    if callable(table):
        return table
    if isinstance(table, pd.DataFrame):
        levels, values = table.iloc[:, 0].to_numpy(float), table.iloc[:, 1].to_numpy(float)
    elif isinstance(table, Mapping):
        levels, values = np.array(list(table.keys()), float), np.array(list(table.values()), float)
    else:
        levels, values = (np.asarray(a, float) for a in table)
    order = np.argsort(levels)
    levels, values = levels[order], values[order]
    if len(levels) < 2 or np.any(np.diff(levels) <= 0):
        raise ValueError("physical_mapper: need at least two distinct levels")
    dv = np.diff(values)
    if not (np.all(dv > 0) or np.all(dv < 0)):
        raise ValueError("physical_mapper: physical values must be strictly monotone in level")

    def to_physical(x):
        x = np.asarray(x, float)
        out = np.interp(x, levels, values)
        return np.where((x < levels[0]) | (x > levels[-1]) | ~np.isfinite(x), np.nan, out)

    return to_physical


def _map_physical(to_physical, thr: float, ci: tuple[float, float]):
    if to_physical is None:
        return math.nan, (math.nan, math.nan)
    vals = []
    for v in (thr, *ci):
        vals.append(float(np.asarray(to_physical(np.asarray(v, float)))) if np.isfinite(v) else math.nan)
    lo, hi = vals[1], vals[2]
    if np.isfinite(lo) and np.isfinite(hi) and lo > hi:  # decreasing map (e.g. kbps)
        lo, hi = hi, lo
    return vals[0], (lo, hi)


# ----------------------------------------------------------------------------- model core


def _safe_log(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float)
    return np.log(np.where(x > 0, x, np.nan))


def _cdf(model: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F(z) and dF/dz."""
    z = np.clip(z, -_Z_CLIP, _Z_CLIP)
    if model == "logistic":
        f = 1.0 / (1.0 + np.exp(-z))
        return f, f * (1.0 - f)
    ez = _LN2 * np.exp(z)
    surv = np.exp(-ez)
    return 1.0 - surv, ez * surv


def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def _logit(p):
    return np.log(p) - np.log1p(-p)


@dataclass
class _Problem:
    """Batched binomial problem: B replicates sharing the level grid u (L,)."""

    model: str
    u: np.ndarray          # (L,) x (logistic) or log x (weibull)
    n: np.ndarray          # (B, L) trials per level
    k: np.ndarray          # (B, L) "different" per level
    n0: np.ndarray         # (B,) catch trials
    k0: np.ndarray         # (B,) catch "different"
    guess_fixed: np.ndarray | None  # (B,) or None when gamma is free
    lapse_fixed: np.ndarray | None  # (B,) or None when lambda is free
    guess_max: float
    lapse_max: float
    m_bounds: tuple[float, float]
    s_bounds: tuple[float, float]

    @property
    def n_params(self) -> int:
        return 2 + (self.guess_fixed is None) + (self.lapse_fixed is None)

    def unpack(self, theta):
        m, s = theta[:, 0], theta[:, 1]
        i = 2
        if self.guess_fixed is None:
            g = self.guess_max * _sigmoid(theta[:, i])
            i += 1
        else:
            g = self.guess_fixed
        lam = self.lapse_max * _sigmoid(theta[:, i]) if self.lapse_fixed is None else self.lapse_fixed
        return m, s, g, lam

    def clip(self, theta):
        theta = theta.copy()
        theta[:, 0] = np.clip(theta[:, 0], *self.m_bounds)
        theta[:, 1] = np.clip(theta[:, 1], *self.s_bounds)
        theta[:, 2:] = np.clip(theta[:, 2:], -_SIGMOID_CLIP, _SIGMOID_CLIP)
        return theta

    def nll(self, theta, with_derivs: bool = False):
        m, s, g, lam = self.unpack(theta)
        beta = np.exp(s)
        z = beta[:, None] * (self.u[None, :] - m[:, None])
        f, df = _cdf(self.model, z)
        c = (1.0 - g - lam)[:, None]
        p = np.clip(g[:, None] + c * f, _P_EPS, 1.0 - _P_EPS)
        g0 = np.clip(g, _P_EPS, 1.0 - _P_EPS)
        nll = -(self.k * np.log(p) + (self.n - self.k) * np.log1p(-p)).sum(axis=1)
        nll -= self.k0 * np.log(g0) + (self.n0 - self.k0) * np.log1p(-g0)
        if not with_derivs:
            return nll
        # dp/dtheta for each level, (B, L, P); catch trials only see gamma.
        cols = [c * df * (-beta[:, None]), c * df * np.clip(z, -_Z_CLIP, _Z_CLIP)]
        cols0 = [np.zeros_like(g), np.zeros_like(g)]
        if self.guess_fixed is None:
            dg = g * (1.0 - g / self.guess_max)
            cols.append((1.0 - f) * dg[:, None])
            cols0.append(dg)
        if self.lapse_fixed is None:
            dl = lam * (1.0 - lam / self.lapse_max)
            cols.append(-f * dl[:, None])
            cols0.append(np.zeros_like(g))
        jac = np.stack(cols, axis=-1)
        jac0 = np.stack(cols0, axis=-1)
        w = 1.0 / (p * (1.0 - p))
        resid = (self.k - self.n * p) * w                         # d logL / dp
        grad = -np.einsum("bl,blp->bp", resid, jac)
        grad -= ((self.k0 - self.n0 * g0) / (g0 * (1.0 - g0)))[:, None] * jac0
        fisher = np.einsum("bl,blp,blq->bpq", self.n * w, jac, jac)
        fisher += (self.n0 / (g0 * (1.0 - g0)))[:, None, None] * jac0[:, :, None] * jac0[:, None, :]
        return nll, grad, fisher


def _solve(prob: _Problem, theta0: np.ndarray, max_iter: int = 200, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Batched Levenberg-Marquardt on the Fisher-scoring quadratic model.

    Each row keeps its own damping; a step is taken only if it lowers that row's
    negative log-likelihood, so the NLL is monotone per row.
    """
    theta = prob.clip(np.asarray(theta0, float))
    B, P = theta.shape
    mu = np.full(B, 1e-3)
    eye = np.eye(P)
    nll, grad, fisher = prob.nll(theta, with_derivs=True)
    active = np.ones(B, bool)
    for _ in range(max_iter):
        if not active.any():
            break
        diag = np.einsum("bpp->bp", fisher)
        a = fisher + mu[:, None, None] * (diag[:, :, None] * eye + 1e-8 * eye)
        step = -np.linalg.solve(a, grad[..., None])[..., 0]
        step[~active] = 0.0
        cand = prob.clip(theta + step)
        cand_nll = prob.nll(cand)
        better = active & (cand_nll < nll)
        improvement = np.where(better, nll - cand_nll, 0.0)
        if better.any():
            theta[better] = cand[better]
            nll[better], grad[better], fisher[better] = _subset_derivs(prob, theta, better)
        mu = np.where(better, np.maximum(mu / 4.0, 1e-9), mu * 8.0)
        small_step = np.abs(step).max(axis=1) < 1e-10
        # a tiny gain counts as convergence only near the Gauss-Newton regime (small damping)
        converged = (better & (improvement < tol * (1.0 + np.abs(nll))) & (mu < 1.0)) | small_step | (mu > 1e10)
        active &= ~converged
    return theta, nll


def _subset_derivs(prob: _Problem, theta: np.ndarray, rows: np.ndarray):
    sub = _Problem(
        model=prob.model, u=prob.u, n=prob.n[rows], k=prob.k[rows], n0=prob.n0[rows], k0=prob.k0[rows],
        guess_fixed=None if prob.guess_fixed is None else prob.guess_fixed[rows],
        lapse_fixed=None if prob.lapse_fixed is None else prob.lapse_fixed[rows],
        guess_max=prob.guess_max, lapse_max=prob.lapse_max, m_bounds=prob.m_bounds, s_bounds=prob.s_bounds,
    )
    return sub.nll(theta[rows], with_derivs=True)


# ----------------------------------------------------------------------------- public fitting


def _binom_nll(k, n, p) -> float:
    p = np.clip(p, _P_EPS, 1.0 - _P_EPS)
    return float(-(k * np.log(p) + (n - k) * np.log1p(-p)).sum())


def _deviance(k, n, p) -> float:
    """Binomial deviance against the saturated model (0 log 0 = 0)."""
    p = np.clip(p, _P_EPS, 1.0 - _P_EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(k > 0, k * np.log(k / (n * p)), 0.0)
        t2 = np.where(n - k > 0, (n - k) * np.log((n - k) / (n * (1.0 - p))), 0.0)
    return float(2.0 * (t1 + t2).sum())


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
    """Fit P(different | x) by maximum likelihood.

    x, y: levels and 0/1 responses of the perturbed (non-identical) trials. x may
        be a level scale or a log physical scale; the Weibull needs x > 0.
    catch: 0/1 responses on identical pairs; they inform gamma only.
    guess: a number (fixed gamma), "fit" (free in [0, guess_max], catch trials in the
        likelihood) or "catch" (fixed at the catch trials' false-alarm rate; the
        bootstrap re-estimates it per replicate so its uncertainty propagates).
    lapse: a number (fixed lambda) or "fit" (free in [0, lapse_max]).
    n_boot: bootstrap replicates for percentile CIs (0 = none); needs ``rng``.
    bootstrap: "parametric" (simulate the fitted observer at the tested levels) or
        "nonparametric" (resample trials with replacement).
    to_physical: callable or table (see ``physical_mapper``) from x to physical
        units; the threshold and its CI are reported in both.

    Returns a PsychometricFit; ``estimable=False`` with a reason for: no/too few
    trials, fewer than ``min_levels`` levels, all responses equal, no reliable
    increase with level (likelihood-ratio test at ``alpha``), a poor fit when the
    design has >= 5 trials per level (deviance test at ``gof_alpha``), or a
    threshold outside the tested range.
    """
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
    to_physical = None if to_physical is None else physical_mapper(to_physical)

    x = np.asarray(x, dtype=float)
    y = _as_binary("y", y)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or infinite levels")
    if model == "weibull" and (x <= 0).any():
        raise ValueError("the Weibull model needs levels x > 0 (treat level-0 pairs as catch trials)")
    c = _as_binary("catch", [] if catch is None else catch)
    n0, k0 = int(c.size), int(c.sum())

    counts = dict(
        n_trials=int(x.size), n_different=int(y.sum()), n_catch=n0, n_catch_different=k0,
        n_levels=int(np.unique(x).size),
        x_min=float(x.min()) if x.size else math.nan, x_max=float(x.max()) if x.size else math.nan,
    )
    ne = lambda reason, **extra: not_estimable(reason, model=model, **counts, **extra)  # noqa: E731
    N, K, L = counts["n_trials"], counts["n_different"], counts["n_levels"]
    if N == 0:
        return ne("no trials")
    if N < min_trials:
        return ne(f"only {N} trials (need >= {min_trials})")
    if L == 1:
        return ne("single level tested: no slope or threshold can be separated")
    if L < min_levels:
        return ne(f"only {L} distinct levels (need >= {min_levels})")
    if K == 0:
        return ne("all responses 'same': threshold above the tested range")
    if K == N:
        return ne("all responses 'different': threshold below the tested range")
    if guess == "catch" and n0 == 0:
        return ne("guess='catch' but there are no identical-pair trials")

    levels, inv = np.unique(x, return_inverse=True)
    n = np.bincount(inv, minlength=L).astype(float)
    k = np.bincount(inv, weights=y, minlength=L).astype(float)
    u = levels if model == "logistic" else np.log(levels)
    u_min, u_max = float(u[0]), float(u[-1])
    span = u_max - u_min
    catch_rate = k0 / n0 if n0 else math.nan

    def make_problem(nb, kb, n0b, k0b, guess_b):
        B = nb.shape[0]
        return _Problem(
            model=model, u=u, n=nb, k=kb, n0=n0b, k0=k0b,
            guess_fixed=None if guess == "fit" else guess_b,
            lapse_fixed=None if lapse == "fit" else np.full(B, float(lapse)),
            guess_max=guess_max, lapse_max=lapse_max,
            m_bounds=(u_min - 2.0 * span, u_max + 2.0 * span),
            s_bounds=(math.log(0.01 / span), math.log(1000.0 / span)),
        )

    def fixed_guess(B, rate=None):
        if guess == "fit":
            return None
        value = float(guess) if guess != "catch" else (catch_rate if rate is None else None)
        return np.full(B, value) if rate is None else rate

    # Point estimate: multi-start, keep the best row.
    m_starts = u_min + span * np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    s_starts = np.log(np.array([2.0, 8.0, 30.0]) / span)
    mm, ss = (a.ravel() for a in np.meshgrid(m_starts, s_starts))
    S = mm.size
    starts = [mm, ss]
    if guess == "fit":
        g_start = np.clip(catch_rate if n0 else 0.05, 0.01, 0.9 * guess_max)
        starts.append(np.full(S, _logit(g_start / guess_max)))
    if lapse == "fit":
        starts.append(np.full(S, _logit(0.2)))
    prob = make_problem(
        np.broadcast_to(n, (S, L)), np.broadcast_to(k, (S, L)),
        np.full(S, float(n0)), np.full(S, float(k0)), fixed_guess(S),
    )
    theta_all, nll_all = _solve(prob, np.stack(starts, axis=1))
    best = int(np.argmin(nll_all))
    theta_hat, nll_hat = theta_all[best : best + 1], float(nll_all[best])
    m_hat, s_hat, g_hat, l_hat = (float(a[0]) for a in prob.unpack(theta_hat))
    beta_hat = math.exp(s_hat)
    threshold = m_hat if model == "logistic" else math.exp(m_hat)
    f_hat, _ = _cdf(model, beta_hat * (u - m_hat))
    p_hat = g_hat + (1.0 - g_hat - l_hat) * f_hat

    # Likelihood-ratio test against "P(different) does not depend on level".
    g_null = float(guess) if not isinstance(guess, str) else catch_rate
    nll_null = _binom_nll(k, n, K / N) + (_binom_nll(k0, n0, g_null) if n0 else 0.0)
    lr = max(0.0, 2.0 * (nll_null - nll_hat))
    lr_p = float(stats.chi2.sf(lr, df=2))
    fitted = dict(
        guess_rate=g_hat, lapse_rate=l_hat, neg_log_likelihood=nll_hat, lr_pvalue=lr_p,
    )
    if lr_p > alpha:
        return ne(
            f"no reliable increase of P(different) with level (likelihood-ratio p = {lr_p:.2g}): "
            "flat or non-monotone responses", **fitted,
        )
    notes: list[str] = []
    n_free = prob.n_params
    if n.min() >= 5 and L > n_free:
        dev = _deviance(k, n, p_hat)
        gof_p = float(stats.chi2.sf(dev, df=L - n_free))
        if gof_p < gof_alpha:
            return ne(
                f"poor fit: responses are not a monotone sigmoid of level (deviance {dev:.1f} on "
                f"{L - n_free} df, p = {gof_p:.2g})", **fitted,
            )
        notes.append(f"deviance {dev:.1f} on {L - n_free} df (p = {gof_p:.2g})")
    else:
        notes.append("goodness of fit not tested (fewer than 5 trials at some level)")
    if not u_min <= m_hat <= u_max:
        return ne(
            f"threshold {threshold:.4g} outside the tested range [{levels[0]:.4g}, {levels[-1]:.4g}]",
            **fitted,
        )
    if s_hat >= prob.s_bounds[1] - 1e-6:
        notes.append("slope at its upper bound (responses perfectly separated): threshold lies between two tested levels")

    thr_ci = slope_ci = (math.nan, math.nan)
    outside = math.nan
    if n_boot:
        thr_b, beta_b = _bootstrap(
            make_problem, theta_hat, p_hat, n, k, n0, k0, g_hat, guess, n_boot, bootstrap, rng
        )
        outside = float(np.mean((thr_b < u_min) | (thr_b > u_max)))
        q = [(1.0 - ci_level) / 2.0, (1.0 + ci_level) / 2.0]
        lo, hi = np.quantile(thr_b, q)
        # An endpoint beyond the tested range is not a number the data support.
        lo = lo if lo >= u_min else -math.inf
        hi = hi if hi <= u_max else math.inf
        if model == "weibull":
            lo, hi = math.exp(lo) if np.isfinite(lo) else 0.0, math.exp(hi) if np.isfinite(hi) else math.inf
        thr_ci = (float(lo), float(hi))
        slope_ci = tuple(float(v) for v in np.quantile(beta_b, q))
        if outside > (1.0 - ci_level) / 2.0:
            notes.append(f"{outside:.0%} of bootstrap thresholds fell outside the tested range")
    phys, phys_ci = _map_physical(to_physical, threshold, thr_ci)
    return PsychometricFit(
        estimable=True, reason="", model=model, threshold=threshold, slope=beta_hat,
        threshold_ci=thr_ci, slope_ci=slope_ci, ci_level=ci_level if n_boot else math.nan,
        n_boot=int(n_boot), boot_outside_range_frac=outside,
        threshold_physical=phys, threshold_physical_ci=phys_ci, notes=tuple(notes), **counts, **fitted,
    )


def _bootstrap(make_problem, theta_hat, p_hat, n, k, n0, k0, g_hat, guess, B, kind, rng):
    """Vectorised bootstrap: returns (location m in u units, slope beta) per replicate."""
    L = n.size
    N = n.sum()
    if kind == "parametric":
        nb = np.broadcast_to(n, (B, L)).copy()
        kb = rng.binomial(nb.astype(np.int64), p_hat).astype(float)
        g_sim = g_hat if guess == "fit" else (k0 / n0 if n0 else 0.0)
        k0b = rng.binomial(n0, g_sim, size=B).astype(float) if n0 else np.zeros(B)
    else:
        nb = rng.multinomial(int(N), n / N, size=B).astype(float)
        kb = rng.binomial(nb.astype(np.int64), k / n).astype(float)
        k0b = rng.binomial(n0, k0 / n0, size=B).astype(float) if n0 else np.zeros(B)
    n0b = np.full(B, float(n0))
    if guess == "fit":
        guess_b = None
    elif guess == "catch":
        guess_b = k0b / n0
    else:
        guess_b = np.full(B, float(guess))
    prob = make_problem(nb, kb, n0b, k0b, guess_b)
    theta, _ = _solve(prob, np.repeat(theta_hat, B, axis=0))
    return theta[:, 0], np.exp(theta[:, 1])


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
            g.loc[~is_catch, x].to_numpy(float), g.loc[~is_catch, y].to_numpy(),
            catch=g.loc[is_catch, y].to_numpy() if catch_col else None, **fit_kwargs,
        )
        rows.append({**dict(zip(by, key)), **fit.as_dict()})
    if not by:
        rows[0] = {"group": "pooled", **rows[0]}
    return pd.DataFrame(rows)
