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

Threshold interval: penalised profile likelihood (chosen on evidence, see below).
    The interval is {m : 2 [min_nuisance pNLL(m) - min pNLL] <= chi2_1(ci_level)} with
    pNLL = NLL + the negative log of psignifit 4's default priors on the nuisance
    parameters: its width prior (flat in the 5-95 % width between twice the smallest
    gap between tested levels and the tested range, cosine fall-offs to 0 at that gap
    and at 3x the range; ``_width_penalty``) and a Beta(1, 20) prior on the lapse rate
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
        """P(different) at x under the fitted parameters (NaN if not estimable; a step
        at the middle of the bracket when the data are separated)."""
        x = np.asarray(x, dtype=float)
        if not self.estimable:
            return np.full(x.shape, np.nan)
        if self.separated:
            lo, hi = self.threshold_bracket
            cut = 0.5 * (lo + hi) if self.model == "logistic" else math.sqrt(lo * hi)
            return np.where(x < cut, self.guess_rate, 1.0 - self.lapse_rate)
        u, m = (x, self.threshold) if self.model == "logistic" else (_safe_log(x), math.log(self.threshold))
        f, _ = _cdf(self.model, self.slope * (u - m))
        return self.guess_rate + (1.0 - self.guess_rate - self.lapse_rate) * f

    def threshold_text(self, digits: int = 3, unit: str = "") -> str:
        """The threshold as a reader should see it: "44.9 [40.1, 49.8]", "between 40
        and 50 (separated data) [37.2, 52.9]", "above 100 (all 'same')", "< 20.2" ends."""
        return describe_threshold(self.threshold, self.threshold_ci, self.threshold_bracket,
                                  estimable=self.estimable, separated=self.separated, digits=digits, unit=unit)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["threshold_text"] = self.threshold_text()
        for key in ("threshold_ci", "slope_ci", "threshold_physical_ci", "threshold_bracket",
                    "threshold_ci_bootstrap", "threshold_physical_bracket"):
            lo, hi = d.pop(key)
            d[f"{key}_low"], d[f"{key}_high"] = lo, hi
        d["notes"] = "; ".join(self.notes)
        return d


def not_estimable(reason: str, model: str = "logistic", **counts) -> PsychometricFit:
    return PsychometricFit(estimable=False, reason=reason, model=model, **counts)


def format_number(v: float, digits: int = 3) -> str:
    """A number for a table cell: 3 significant digits, no exponent for the usual
    range, "4.16×10⁻⁷" below 1e-4, 3370.2 -> "3370", "" for NaN, "∞"/"−∞" (callers
    that print intervals use ``format_interval``, which never shows an infinity)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    v = float(v)
    if math.isnan(v):
        return ""
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    a = abs(v)
    if a < 1e-4 or a >= 1e7:   # 4.158e-07 -> "4.16×10⁻⁷"
        mant, exp = f"{v:.{max(digits - 1, 0)}e}".split("e")
        sup = str(int(exp)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
        return f"{mant}×10{sup}"
    if a >= 10 ** (digits - 1):
        return f"{v:.0f}"
    decimals = max(digits - 1 - math.floor(math.log10(a)), 0)
    text = f"{v:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_p(p: float) -> str:
    """A p-value for a table: "< 0.001" below 0.001, else 2 significant digits."""
    if p is None or math.isnan(p):
        return ""
    return "< 0.001" if p < 0.001 else format_number(p, 2)


def format_interval(lo: float, hi: float, digits: int = 3) -> str:
    """An interval for a table cell: "[1.2, 3.4]", "< 3.4" (lower end open: below the
    tested range), "> 1.2" (upper end open), "unbounded" or "" (no interval)."""
    if (lo is None or math.isnan(lo)) and (hi is None or math.isnan(hi)):
        return ""
    lo_open, hi_open = lo is None or not math.isfinite(lo), hi is None or not math.isfinite(hi)
    if lo_open and hi_open:
        return "unbounded"
    if lo_open:
        return f"< {format_number(hi, digits)}"
    if hi_open:
        return f"> {format_number(lo, digits)}"
    return f"[{format_number(lo, digits)}, {format_number(hi, digits)}]"


def describe_threshold(threshold: float, ci, bracket, *, estimable: bool, separated: bool,
                       digits: int = 3, unit: str = "") -> str:
    """Text for one threshold (see ``PsychometricFit.threshold_text``)."""
    u = f" {unit}" if unit else ""
    blo, bhi = bracket
    if separated:
        d = digits
        while format_number(blo, d) == format_number(bhi, d) and d < 8:   # a narrow gap between two levels
            d += 1
        text = f"between {format_number(blo, d)} and {format_number(bhi, d)}{u} (separated data)"
    elif not estimable:
        if math.isfinite(blo) and not math.isfinite(bhi):
            text = f"above {format_number(blo, digits)}{u} (not estimable)"
        elif math.isfinite(bhi) and not math.isfinite(blo):
            text = f"below {format_number(bhi, digits)}{u} (not estimable)"
        else:
            return "not estimable"
    else:
        text = f"{format_number(threshold, digits)}{u}"
    ci_text = format_interval(*ci, digits=digits)
    return f"{text}, CI {ci_text}" if ci_text else text


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


def map_interval(to_physical, lo: float, hi: float, x_lo: float, x_hi: float) -> tuple[float, float]:
    """Map a level interval [lo, hi] through a monotone ``to_physical`` (increasing or
    decreasing) into an ordered physical interval.

    x_lo, x_hi: the tested range. An end outside it (an open end, -inf/+inf, or the 0
    an open Weibull end becomes) maps to the matching infinity in physical units: for
    a decreasing map (SNR falls as the level rises) an open lower level end is an
    open UPPER physical end. The direction is read from the map at the range's ends.
    Returns (low, high) with low <= high; NaN ends stay NaN in their own slot.
    """
    def ev(v):
        return float(np.asarray(to_physical(np.asarray(v, float))))

    a, b = ev(x_lo), ev(x_hi)
    if not (np.isfinite(a) and np.isfinite(b)) or a == b:
        raise ValueError(f"map_interval: the physical map is not finite and monotone over the tested "
                         f"range [{x_lo:g}, {x_hi:g}] (gives {a:g}, {b:g})")
    increasing = b > a

    def end(v, low_side: bool):
        if v is None or math.isnan(v):
            return math.nan
        if v < x_lo or (not math.isfinite(v) and v < 0):
            return -math.inf if increasing else math.inf
        if v > x_hi:
            return math.inf if increasing else -math.inf
        return ev(v)

    p_lo, p_hi = end(lo, True), end(hi, False)
    if increasing:
        return p_lo, p_hi
    # decreasing: the level interval's upper end is the physical lower end
    return p_hi, p_lo


def _map_physical(to_physical, thr: float, ci: tuple[float, float], bracket: tuple[float, float],
                  x_lo: float, x_hi: float):
    if to_physical is None:
        return math.nan, (math.nan, math.nan), (math.nan, math.nan)
    phys = float(np.asarray(to_physical(np.asarray(thr, float)))) if np.isfinite(thr) else math.nan
    return phys, map_interval(to_physical, *ci, x_lo, x_hi), map_interval(to_physical, *bracket, x_lo, x_hi)


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
    fix_m: bool = False    # profile likelihood: the location stays where it starts
    width_prior: tuple[float, float, float] | None = None  # (c, w_min, w_range): see _width_penalty
    lapse_prior_b: float = 0.0  # Beta(1, b) prior on lambda as a penalty -(b - 1) log(1 - lambda)

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
        if self.width_prior is not None:
            nll = nll + _width_penalty(s, *self.width_prior)
        if self.lapse_prior_b and self.lapse_fixed is None:
            nll = nll - (self.lapse_prior_b - 1.0) * np.log1p(-lam)
        if not with_derivs:
            return nll
        # dp/dtheta for each level, (B, L, P); catch trials only see gamma.
        dm = np.zeros_like(z) if self.fix_m else c * df * (-beta[:, None])
        cols = [dm, c * df * np.clip(z, -_Z_CLIP, _Z_CLIP)]
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
        if self.width_prior is not None:  # penalty derivatives in s by central differences
            h = 1e-4
            pp, p0, pm = (_width_penalty(s + d, *self.width_prior) for d in (h, 0.0, -h))
            grad[:, 1] += (pp - pm) / (2.0 * h)
            fisher[:, 1, 1] += np.maximum((pp - 2.0 * p0 + pm) / h**2, 0.0)
        if self.lapse_prior_b and self.lapse_fixed is None:
            dl = lam * (1.0 - lam / self.lapse_max)
            a = self.lapse_prior_b - 1.0
            grad[:, -1] += a * dl / (1.0 - lam)
            fisher[:, -1, -1] += a * (dl / (1.0 - lam)) ** 2
        return nll, grad, fisher


def _width_penalty(s, c: float, w_min: float, w_range: float):
    """-log of psignifit 4's default width prior (Schuett et al. 2016, Vision Research 122;
    psignifit/_priors.py ``width_prior``) in the log-slope coordinate s = log(beta).

    The width w = c / beta is the x-distance from F = 0.05 to F = 0.95 (c = 2 ln 19 for the
    logistic, ln(-ln 0.05) - ln(-ln 0.95) for the Gumbel of the Weibull). The prior is flat
    in w on [2 w_min, w_range] with cosine fall-offs to 0 at w_min (the smallest gap between
    tested levels) and at 3 w_range (the tested range); flat in w is a density e^{-s} in s,
    hence the "+ s" term: steep slopes cost likelihood units, one per e-fold."""
    w = c * np.exp(-np.asarray(s, float))
    t_lo = np.clip((w - w_min) / w_min, 1e-3, 1.0)
    t_hi = np.clip((w - w_range) / w_range, 0.0, 2.0 - 2e-3)
    prior = 0.5 * (1.0 - np.cos(np.pi * t_lo)) * 0.5 * (1.0 + np.cos(0.5 * np.pi * t_hi))
    return -np.log(prior) - np.log(w / c)


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
        if prob.fix_m:
            step[:, 0] = 0.0
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
        fix_m=prob.fix_m, width_prior=prob.width_prior, lapse_prior_b=prob.lapse_prior_b,
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
    ci_level: level of the threshold's penalised profile-likelihood interval (always
        computed; see the module docstring for the method and its measured coverage).
        With guess="catch" gamma is free in the profile, informed by the identical
        pairs, so its uncertainty widens the interval.
    n_boot: bootstrap replicates (0 = none; needs ``rng``) for the slope interval and
        the percentile threshold interval kept for comparison (``threshold_ci_bootstrap``).
    bootstrap: "parametric" (simulate the fitted observer at the tested levels) or
        "nonparametric" (resample trials with replacement).
    to_physical: callable or table (see ``physical_mapper``) from x to physical
        units; the threshold, its interval and its bracket are reported in both
        (``map_interval``: decreasing maps swap the ends, open ends stay open).

    Returns a PsychometricFit: ``threshold_ci`` always holds the estimate (or the
    bracket); an end the data cannot close inside the tested range is -inf / +inf.
    ``separated=True`` (threshold NaN, slope inf, ``threshold_bracket`` = the two
    tested levels around the step) when a step fits as well as any finite slope.
    ``estimable=False`` with a reason for: no/too few trials, fewer than
    ``min_levels`` levels, all responses equal (bracket beyond the range), no
    reliable increase with level (likelihood-ratio test at ``alpha``), a poor fit
    when the design has >= 5 trials per level (deviance test at ``gof_alpha``), or a
    threshold outside the tested range (bracket beyond the range, profile interval
    kept in ``threshold_ci``). Raises ValueError for malformed input.
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
    ne = lambda reason, **extra: not_estimable(reason, model=model, **counts, **extra)
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
        return ne(f"all responses 'same': threshold above the tested range (> {counts['x_max']:.4g})",
                  threshold_bracket=(counts["x_max"], math.inf))
    if K == N:
        return ne(f"all responses 'different': threshold below the tested range (< {counts['x_min']:.4g})",
                  threshold_bracket=(-math.inf, counts["x_min"]))
    if guess == "catch" and n0 == 0:
        return ne("guess='catch' but there are no identical-pair trials")

    levels, inv = np.unique(x, return_inverse=True)
    n = np.bincount(inv, minlength=L).astype(float)
    k = np.bincount(inv, weights=y, minlength=L).astype(float)
    u = levels if model == "logistic" else np.log(levels)
    u_min, u_max = float(u[0]), float(u[-1])
    span = u_max - u_min
    catch_rate = k0 / n0 if n0 else math.nan

    # psignifit 4's default priors on the width and the lapse rate, as penalties in the profile
    gaps = np.diff(u)
    w_min = max(float(gaps.min()), _MIN_BRACKET_FRAC * span)
    width_c = 2.0 * math.log(19.0) if model == "logistic" else math.log(-math.log(0.05)) - math.log(-math.log(0.95))
    width_prior = (width_c, w_min, span)
    s_prior_bounds = (math.log(width_c / (3.0 * span * (1.0 - 1e-3))), math.log(width_c / (w_min * (1.0 + 1e-3))))

    def make_problem(nb, kb, n0b, k0b, guess_b, free_guess=False, prior=False):
        B = nb.shape[0]
        return _Problem(
            model=model, u=u, n=nb, k=kb, n0=n0b, k0=k0b,
            guess_fixed=None if guess == "fit" or free_guess else guess_b,
            lapse_fixed=None if lapse == "fit" else np.full(B, float(lapse)),
            guess_max=guess_max, lapse_max=lapse_max,
            m_bounds=(u_min - 2.0 * span, u_max + 2.0 * span),
            s_bounds=s_prior_bounds if prior else (math.log(0.01 / span), math.log(1000.0 / span)),
            width_prior=width_prior if prior and _USE_WIDTH_PRIOR else None,
            lapse_prior_b=_LAPSE_PRIOR_B if prior else 0.0,
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

    # Separation, from the data: does a step between two tested levels fit as well as any finite slope?
    step_nll, cuts = _step_nll(n, k, n0, k0, guess, lapse, guess_max, lapse_max, catch_rate)
    # a cut between levels closer than 1% of the tested range brackets nothing a reader can use
    step_nll = np.where(np.diff(u) >= _MIN_BRACKET_FRAC * span, step_nll, np.inf)
    best_step = float(step_nll.min())
    separated = bool(np.isfinite(best_step)) and nll_hat >= best_step - _SEPARATION_TOL
    bracket = (math.nan, math.nan)
    if separated:
        tied = np.flatnonzero(step_nll <= best_step + _SEPARATION_TOL)
        bracket = (float(levels[cuts[tied.min()]]), float(levels[cuts[tied.max()] + 1]))
        notes.append(f"responses separated between levels {bracket[0]:.4g} and {bracket[1]:.4g}: "
                     "a step fits as well as any finite slope, so the threshold is only bracketed")

    # Profile-likelihood interval of the location (see the module docstring for the choice).
    theta_ref = theta_hat.copy()
    if separated:  # start the nuisance parameters from the step's, the slope at its bound
        theta_ref[0, 1] = prob.s_bounds[1]
    free_guess = guess == "catch"
    if free_guess:
        # gamma was fixed at the identical pairs' rate for the estimate; in the profile it is a
        # nuisance parameter informed by those same trials, so its uncertainty reaches the interval
        g0 = _logit(np.clip(catch_rate, 1e-4, 0.999 * guess_max) / guess_max)
        theta_ref = np.insert(theta_ref, 2, g0, axis=1)
    (lo_u, hi_u), _ = _profile_interval(
        lambda *a, **kw: make_problem(*a, free_guess=free_guess, prior=True, **kw), fixed_guess, theta_ref,
        n, k, n0, k0, u, m_hat, ci_level, s_prior_bounds)
    to_x = (lambda v: v) if model == "logistic" else (lambda v: math.exp(v) if np.isfinite(v) else v)
    thr_ci = (to_x(lo_u), to_x(hi_u))
    if not separated and not u_min <= m_hat <= u_max:
        above = m_hat > u_max
        out_bracket = (float(levels[-1]), math.inf) if above else (-math.inf, float(levels[0]))
        return ne(
            f"threshold {threshold:.4g} outside the tested range [{levels[0]:.4g}, {levels[-1]:.4g}]",
            threshold_bracket=out_bracket, threshold_ci=thr_ci, threshold_ci_method="profile likelihood",
            ci_level=ci_level, **fitted,
        )
    if separated:
        thr_ci = (min(thr_ci[0], bracket[0]), max(thr_ci[1], bracket[1]))
        threshold_out, slope_out = math.nan, math.inf
    else:
        threshold_out, slope_out = threshold, beta_hat
        thr_ci = (min(thr_ci[0], threshold), max(thr_ci[1], threshold))

    slope_ci = boot_ci = (math.nan, math.nan)
    outside = math.nan
    if n_boot:
        thr_b, beta_b = _bootstrap(
            make_problem, theta_hat, p_hat, n, k, n0, k0, g_hat, guess, n_boot, bootstrap, rng
        )
        outside = float(np.mean((thr_b < u_min) | (thr_b > u_max)))
        q = [(1.0 - ci_level) / 2.0, (1.0 + ci_level) / 2.0]
        lo, hi = np.quantile(thr_b, q)
        lo = lo if lo >= u_min else -math.inf
        hi = hi if hi <= u_max else math.inf
        boot_ci = (float(to_x(lo)), float(to_x(hi)))
        slope_ci = tuple(float(v) for v in np.quantile(beta_b, q))
        if separated:
            slope_ci = (slope_ci[0], math.inf)
        if outside > (1.0 - ci_level) / 2.0:
            notes.append(f"{outside:.0%} of bootstrap thresholds fell outside the tested range")
    phys, phys_ci, phys_bracket = _map_physical(to_physical, threshold_out, thr_ci, bracket,
                                                float(levels[0]), float(levels[-1]))
    return PsychometricFit(
        estimable=True, reason="", model=model, threshold=threshold_out, slope=slope_out,
        threshold_ci=(float(thr_ci[0]), float(thr_ci[1])), threshold_ci_method="profile likelihood",
        separated=bool(separated), threshold_bracket=bracket, threshold_ci_bootstrap=boot_ci,
        slope_ci=slope_ci, ci_level=ci_level,
        n_boot=int(n_boot), boot_outside_range_frac=outside,
        threshold_physical=phys, threshold_physical_ci=phys_ci, threshold_physical_bracket=phys_bracket,
        notes=tuple(notes), **counts, **fitted,
    )


_SEPARATION_TOL = 1e-3   # NLL units: a finite slope must beat the best step by more to count as a fit
_MIN_BRACKET_FRAC = 0.01  # cuts only across gaps of at least 1% of the tested range
_PROFILE_GRID = 81
_USE_WIDTH_PRIOR = True
_LAPSE_PRIOR_B = 20.0


def _step_nll(n, k, n0, k0, guess, lapse, guess_max, lapse_max, catch_rate):
    """NLL of the best step function at every cut between adjacent tested levels.

    The step is the model's slope -> infinity limit: P = gamma below the cut and
    1 - lambda above, with gamma and lambda at their ML values inside their bounds
    (closed form: a clipped proportion). Returns (nll per cut, index of the level
    just below each cut). Identical-pair trials enter as in the smooth fit.
    """
    cn, ck = np.cumsum(n)[:-1], np.cumsum(k)[:-1]
    an, ak = n.sum() - cn, k.sum() - ck
    if guess == "fit":
        g = np.clip((ck + k0) / (cn + n0), 0.0, guess_max)
    else:
        g = np.full(cn.shape, catch_rate if guess == "catch" else float(guess))
    lam = np.clip(1.0 - ak / an, 0.0, lapse_max) if lapse == "fit" else np.full(cn.shape, float(lapse))
    nll = np.array([_binom_nll(ck[j], cn[j], g[j]) + _binom_nll(ak[j], an[j], 1.0 - lam[j])
                    + (_binom_nll(k0, n0, g[j]) if n0 else 0.0) for j in range(cn.size)])
    return nll, np.arange(cn.size)


def _profile_interval(make_problem, fixed_guess, theta_ref, n, k, n0, k0, u, m_hat, ci_level, s_bounds):
    """Penalised profile-likelihood interval of the location m (u units): returns ((low,
    high), min profile). The profile is min over the nuisance parameters of NLL + the
    width and lapse penalties (``_width_penalty``); an end that stays inside the cutoff
    at the edge of the tested range is open (-inf / +inf)."""
    u_min, u_max = float(u[0]), float(u[-1])
    grid = np.union1d(np.linspace(u_min, u_max, _PROFILE_GRID), np.clip([m_hat], u_min, u_max))
    G = grid.size
    s_starts = np.unique(np.clip([theta_ref[0, 1], math.log(3.0 / (u_max - u_min)),
                                  math.log(12.0 / (u_max - u_min))], *s_bounds))
    S = s_starts.size
    theta0 = np.repeat(theta_ref, G * S, axis=0)
    theta0[:, 0] = np.repeat(grid, S)
    theta0[:, 1] = np.tile(s_starts, G)
    B, L = G * S, n.size
    prob = make_problem(np.broadcast_to(n, (B, L)), np.broadcast_to(k, (B, L)),
                        np.full(B, float(n0)), np.full(B, float(k0)), fixed_guess(B))
    prob.fix_m = True
    theta_fit, nll = _solve(prob, theta0)
    prof = nll.reshape(G, S).min(axis=1)
    # the penalised optimum with m free, started from the best grid point
    best = int(np.argmin(nll))
    free = make_problem(n[None, :], k[None, :], np.full(1, float(n0)), np.full(1, float(k0)), fixed_guess(1))
    _, nll_free = _solve(free, theta_fit[best : best + 1])
    ref = min(float(nll_free[0]), float(prof.min()))
    dev = 2.0 * (prof - ref)
    cutoff = float(stats.chi2.ppf(ci_level, df=1))
    inside = np.flatnonzero(dev <= cutoff)
    if inside.size == 0:  # the whole tested range is excluded: the interval lies beyond it, on m_hat's side
        return ((-math.inf, u_min) if m_hat < u_min else (u_max, math.inf)), float(prof.min())
    i0, i1 = int(inside.min()), int(inside.max())

    def cross(i_out, i_in):
        d_out, d_in = dev[i_out], dev[i_in]
        t = (cutoff - d_in) / (d_out - d_in) if d_out > d_in else 0.0
        return float(grid[i_in] + t * (grid[i_out] - grid[i_in]))

    lo = -math.inf if i0 == 0 else cross(i0 - 1, i0)
    hi = math.inf if i1 == G - 1 else cross(i1 + 1, i1)
    return (lo, hi), float(prof.min())


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
