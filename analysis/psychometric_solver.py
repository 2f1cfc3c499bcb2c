"""The likelihood of a psychometric function over per-level binomial counts, and the
batched solver that maximises it.

The model (``listening_test.procedures.observer``, the one home of the function)::

    P(different | x) = gamma + (1 - gamma - lambda) * F(z),   z = beta * (u - m)

with u = x and m = threshold for the logistic, u = log x and m = log threshold for the
Weibull (a Gumbel CDF in log x), beta = exp(s) the slope. A problem holds B replicates
(rows) that share the level grid u (L,) and differ in their counts, so a bootstrap of B
replicates or a profile over G grid points is one vectorised solve, not B scipy calls.

Parameters per row, ``theta`` (B, P): m, s, then the logit of gamma / guess_max when
gamma is free, then the logit of lambda / lapse_max when lambda is free. Identical-pair
("catch") trials inform gamma only: P(different | identical) = gamma.

Solver: Levenberg-Marquardt on the Fisher-scoring quadratic model, each row with its own
damping, a step taken only when it lowers that row's negative log-likelihood (Marquardt
1963, SIAM J. Appl. Math. 11(2); Fisher scoring for binomial GLMs: McCullagh & Nelder 1989,
Generalized Linear Models, ch. 4). Optional penalties: psignifit 4's width prior and a
Beta(1, b) lapse prior (``width_penalty``; Schuett et al. 2016, Vision Research 122).
Pure numpy; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from listening_test.procedures.observer import cdf

__all__ = [
    "LAPSE_PRIOR_B",
    "MODELS",
    "BinomialProblem",
    "FitSetup",
    "LevelCounts",
    "binom_nll",
    "deviance",
    "logit",
    "safe_log",
    "sigmoid",
    "solve",
    "standard_cdf",
    "width_penalty",
]

MODELS = ("logistic", "weibull")
LN2 = math.log(2.0)
P_EPS = 1e-12  # keeps log(p) finite when gamma = 0 or lambda = 0
Z_CLIP = 35.0  # exp(35) is finite; F is saturated far before that
SIGMOID_CLIP = 14.0  # unconstrained gamma/lambda coordinates live in [-14, 14]
LAPSE_PRIOR_B = 20.0  # Beta(1, 20) lapse prior of the threshold interval (psignifit's default is Beta(1, 10))
MIN_GAP_FRAC = 0.01  # gaps between tested levels below 1% of the tested range count as no gap


def safe_log(x) -> np.ndarray:
    """log x for x > 0, NaN elsewhere (no warning): the Weibull's u coordinate."""
    x = np.asarray(x, float)
    return np.log(np.where(x > 0, x, np.nan))


def standard_cdf(model: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F(z) and dF/dz of the standardised sensory function, z = beta * (u - m), any shape.

    F is ``observer.cdf`` with threshold 0 and slope 1 on the logistic's level axis
    (1 / (1 + e^-z)), and the Weibull 1 - 2^-(x / threshold)^beta written in
    z = beta * log(x / threshold), i.e. ``observer.cdf(e^z, 1, 1, "weibull")`` = 1 - 2^-(e^z)
    (a Gumbel CDF). z is clipped to [-35, 35], where F is saturated. Raises ValueError for
    an unknown model (from ``observer.cdf``).
    """
    z = np.clip(z, -Z_CLIP, Z_CLIP)
    if model == "logistic":
        f = cdf(z, 0.0, 1.0, "logistic")
        return f, f * (1.0 - f)
    ez = np.exp(z)
    f = cdf(ez, 1.0, 1.0, model)
    return f, LN2 * ez * np.exp2(-ez)


def sigmoid(t):
    """1 / (1 + e^-t), elementwise."""
    return 1.0 / (1.0 + np.exp(-t))


def logit(p):
    """log(p / (1 - p)), elementwise; the inverse of ``sigmoid``."""
    return np.log(p) - np.log1p(-p)


@dataclass
class BinomialProblem:
    """Batched binomial problem: B replicates sharing the level grid u (L,).

    ``nll(theta)`` is the negative log-likelihood per row (B,) plus the penalties;
    ``nll(theta, with_derivs=True)`` adds its gradient (B, P) and expected information
    (Fisher) matrix (B, P, P) in theta.
    """

    model: str
    u: np.ndarray  # (L,) x (logistic) or log x (weibull)
    n: np.ndarray  # (B, L) trials per level
    k: np.ndarray  # (B, L) "different" per level
    n0: np.ndarray  # (B,) catch trials
    k0: np.ndarray  # (B,) catch "different"
    guess_fixed: np.ndarray | None  # (B,) or None when gamma is free
    lapse_fixed: np.ndarray | None  # (B,) or None when lambda is free
    guess_max: float
    lapse_max: float
    m_bounds: tuple[float, float]
    s_bounds: tuple[float, float]
    fix_m: bool = False  # profile likelihood: the location stays where it starts
    width_prior: tuple[float, float, float] | None = None  # (c, w_min, w_range): see width_penalty
    lapse_prior_b: float = 0.0  # Beta(1, b) prior on lambda as a penalty -(b - 1) log(1 - lambda)

    @property
    def n_params(self) -> int:
        """P: m, s, and gamma and lambda when free."""
        return 2 + (self.guess_fixed is None) + (self.lapse_fixed is None)

    def unpack(self, theta):
        """(m, s, gamma, lambda), each (B,), from theta (B, P)."""
        m, s = theta[:, 0], theta[:, 1]
        i = 2
        if self.guess_fixed is None:
            g = self.guess_max * sigmoid(theta[:, i])
            i += 1
        else:
            g = self.guess_fixed
        lam = self.lapse_max * sigmoid(theta[:, i]) if self.lapse_fixed is None else self.lapse_fixed
        return m, s, g, lam

    def clip(self, theta):
        """theta inside the bounds of m and s and the sigmoid coordinates' [-14, 14]."""
        theta = theta.copy()
        theta[:, 0] = np.clip(theta[:, 0], *self.m_bounds)
        theta[:, 1] = np.clip(theta[:, 1], *self.s_bounds)
        theta[:, 2:] = np.clip(theta[:, 2:], -SIGMOID_CLIP, SIGMOID_CLIP)
        return theta

    def subset(self, rows: np.ndarray) -> BinomialProblem:
        """The same problem restricted to ``rows`` (a boolean mask or indices of B)."""
        return replace(
            self,
            n=self.n[rows],
            k=self.k[rows],
            n0=self.n0[rows],
            k0=self.k0[rows],
            guess_fixed=None if self.guess_fixed is None else self.guess_fixed[rows],
            lapse_fixed=None if self.lapse_fixed is None else self.lapse_fixed[rows],
        )

    def nll(self, theta, with_derivs: bool = False):
        """NLL (B,) at theta (B, P), plus (gradient (B, P), Fisher information (B, P, P))."""
        m, s, g, lam = self.unpack(theta)
        beta = np.exp(s)
        z = beta[:, None] * (self.u[None, :] - m[:, None])
        f, df = standard_cdf(self.model, z)
        c = (1.0 - g - lam)[:, None]
        p = np.clip(g[:, None] + c * f, P_EPS, 1.0 - P_EPS)
        g0 = np.clip(g, P_EPS, 1.0 - P_EPS)
        nll = -(self.k * np.log(p) + (self.n - self.k) * np.log1p(-p)).sum(axis=1)
        nll -= self.k0 * np.log(g0) + (self.n0 - self.k0) * np.log1p(-g0)
        if self.width_prior is not None:
            nll = nll + width_penalty(s, *self.width_prior)
        if self.lapse_prior_b and self.lapse_fixed is None:
            nll = nll - (self.lapse_prior_b - 1.0) * np.log1p(-lam)
        if not with_derivs:
            return nll
        # dp/dtheta for each level, (B, L, P); catch trials only see gamma.
        dm = np.zeros_like(z) if self.fix_m else c * df * (-beta[:, None])
        cols = [dm, c * df * np.clip(z, -Z_CLIP, Z_CLIP)]
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
        resid = (self.k - self.n * p) * w  # d logL / dp
        grad = -np.einsum("bl,blp->bp", resid, jac)
        grad -= ((self.k0 - self.n0 * g0) / (g0 * (1.0 - g0)))[:, None] * jac0
        fisher = np.einsum("bl,blp,blq->bpq", self.n * w, jac, jac)
        fisher += (self.n0 / (g0 * (1.0 - g0)))[:, None, None] * jac0[:, :, None] * jac0[:, None, :]
        if self.width_prior is not None:  # penalty derivatives in s by central differences
            h = 1e-4
            pp, p0, pm = (width_penalty(s + d, *self.width_prior) for d in (h, 0.0, -h))
            grad[:, 1] += (pp - pm) / (2.0 * h)
            fisher[:, 1, 1] += np.maximum((pp - 2.0 * p0 + pm) / h**2, 0.0)
        if self.lapse_prior_b and self.lapse_fixed is None:
            dl = lam * (1.0 - lam / self.lapse_max)
            a = self.lapse_prior_b - 1.0
            grad[:, -1] += a * dl / (1.0 - lam)
            fisher[:, -1, -1] += a * (dl / (1.0 - lam)) ** 2
        return nll, grad, fisher


def width_penalty(s, c: float, w_min: float, w_range: float):
    """-log of psignifit 4's default width prior (Schuett et al. 2016, Vision Research 122;
    psignifit/_priors.py ``width_prior``) in the log-slope coordinate s = log(beta).

    The width w = c / beta is the x-distance from F = 0.05 to F = 0.95 (c = 2 ln 19 for the
    logistic, ln(-ln 0.05) - ln(-ln 0.95) for the Gumbel of the Weibull). The prior is flat
    in w on [2 w_min, w_range] with cosine fall-offs to 0 at w_min (the smallest gap between
    tested levels) and at 3 w_range (the tested range); flat in w is a density e^{-s} in s,
    hence the "+ s" term: steep slopes cost likelihood units, one per e-fold. Same shape as
    ``s``; raises nothing."""
    w = c * np.exp(-np.asarray(s, float))
    t_lo = np.clip((w - w_min) / w_min, 1e-3, 1.0)
    t_hi = np.clip((w - w_range) / w_range, 0.0, 2.0 - 2e-3)
    prior = 0.5 * (1.0 - np.cos(np.pi * t_lo)) * 0.5 * (1.0 + np.cos(0.5 * np.pi * t_hi))
    return -np.log(prior) - np.log(w / c)


def solve(
    prob: BinomialProblem, theta0: np.ndarray, max_iter: int = 200, tol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``prob.nll`` from ``theta0`` (B, P): returns (theta (B, P), nll (B,)).

    Batched Levenberg-Marquardt on the Fisher-scoring quadratic model. Each row keeps
    its own damping; a step is taken only if it lowers that row's negative
    log-likelihood, so the NLL is monotone per row. A row stops when its gain is below
    ``tol`` (relative) near the Gauss-Newton regime, its step is below 1e-10, or its
    damping exceeds 1e10. Raises nothing (numpy's LinAlgError cannot occur: the damped
    matrix is positive definite).
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
            nll[better], grad[better], fisher[better] = prob.subset(better).nll(theta[better], with_derivs=True)
        mu = np.where(better, np.maximum(mu / 4.0, 1e-9), mu * 8.0)
        small_step = np.abs(step).max(axis=1) < 1e-10
        # a tiny gain counts as convergence only near the Gauss-Newton regime (small damping)
        converged = (better & (improvement < tol * (1.0 + np.abs(nll))) & (mu < 1.0)) | small_step | (mu > 1e10)
        active &= ~converged
    return theta, nll


def binom_nll(k, n, p) -> float:
    """Binomial negative log-likelihood of k "different" in n trials at rate p, summed
    over the (broadcast) arrays, without the constant log C(n, k). p is clipped to
    [1e-12, 1 - 1e-12]."""
    p = np.clip(p, P_EPS, 1.0 - P_EPS)
    return float(-(k * np.log(p) + (n - k) * np.log1p(-p)).sum())


def deviance(k, n, p) -> float:
    """Binomial deviance of rates p against the saturated model (0 log 0 = 0), summed:
    2 sum[k log(k / np) + (n - k) log((n - k) / (n (1 - p)))] (McCullagh & Nelder 1989)."""
    p = np.clip(p, P_EPS, 1.0 - P_EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(k > 0, k * np.log(k / (n * p)), 0.0)
        t2 = np.where(n - k > 0, (n - k) * np.log((n - k) / (n * (1.0 - p))), 0.0)
    return float(2.0 * (t1 + t2).sum())


# ----------------------------------------------------------------------------- one fit's problems


@dataclass(frozen=True)
class LevelCounts:
    """The judgments of one fit tabulated per tested level.

    ``levels`` (L,) are the distinct tested levels, ascending; ``n``/``k`` (L,) the
    trials and "different" answers at each; ``n0``/``k0`` the identical-pair trials and
    their "different" answers. ``u`` is the model's location axis: the levels for the
    logistic, their logarithm for the Weibull.
    """

    model: str
    levels: np.ndarray
    n: np.ndarray
    k: np.ndarray
    n0: int
    k0: int

    @classmethod
    def tabulate(cls, model: str, x: np.ndarray, y: np.ndarray, n0: int, k0: int) -> LevelCounts:
        """Count trials (x (N,) levels, y (N,) 0/1 answers) per distinct level. Raises nothing
        (the caller checks x > 0 for the Weibull)."""
        levels, inv = np.unique(x, return_inverse=True)
        n = np.bincount(inv, minlength=levels.size).astype(float)
        k = np.bincount(inv, weights=y, minlength=levels.size).astype(float)
        return cls(model, levels, n, k, int(n0), int(k0))

    @property
    def u(self) -> np.ndarray:
        """(L,) the location axis: levels (logistic) or log levels (Weibull)."""
        return self.levels if self.model == "logistic" else np.log(self.levels)

    @property
    def u_min(self) -> float:
        return float(self.u[0])

    @property
    def u_max(self) -> float:
        return float(self.u[-1])

    @property
    def span(self) -> float:
        """The tested range on the u axis (u_max - u_min)."""
        return self.u_max - self.u_min

    @property
    def catch_rate(self) -> float:
        """The identical pairs' "different" rate (NaN without identical pairs)."""
        return self.k0 / self.n0 if self.n0 else math.nan

    def to_x(self, u: float) -> float:
        """A location in u back on the level axis (open ends stay infinite)."""
        return u if self.model == "logistic" else (math.exp(u) if np.isfinite(u) else u)


@dataclass(frozen=True)
class FitSetup:
    """One fit's data and options, as the factory of its ``BinomialProblem``s.

    ``guess``: a number (gamma fixed), "fit" (free in [0, guess_max]) or "catch" (fixed
    at the identical pairs' rate); ``lapse``: a number or "fit" (free in [0, lapse_max]).
    ``width_prior`` and ``s_prior_bounds`` hold psignifit 4's default width prior
    (Schuett et al. 2016) for this level grid: flat in the 5-95 % width between twice
    the smallest gap between tested levels (at least 1 % of the range) and the tested
    range, on the log-slope s.
    """

    counts: LevelCounts
    guess: float | str
    lapse: float | str
    guess_max: float
    lapse_max: float
    width_prior: tuple[float, float, float]
    s_prior_bounds: tuple[float, float]

    @classmethod
    def build(
        cls, counts: LevelCounts, guess: float | str, lapse: float | str, guess_max: float, lapse_max: float
    ) -> FitSetup:
        """The setup with the width prior of ``counts``' level grid (needs >= 2 levels)."""
        span = counts.span
        w_min = max(float(np.diff(counts.u).min()), MIN_GAP_FRAC * span)
        if counts.model == "logistic":
            width_c = 2.0 * math.log(19.0)
        else:
            width_c = math.log(-math.log(0.05)) - math.log(-math.log(0.95))
        s_prior_bounds = (math.log(width_c / (3.0 * span * (1.0 - 1e-3))), math.log(width_c / (w_min * (1.0 + 1e-3))))
        return cls(counts, guess, lapse, guess_max, lapse_max, (width_c, w_min, span), s_prior_bounds)

    def problem(self, n, k, n0, k0, guess_fixed, *, free_guess: bool = False, prior: bool = False) -> BinomialProblem:
        """A problem over B replicates: n, k (B, L), n0, k0 (B,), ``guess_fixed`` (B,) or None.

        ``free_guess`` makes gamma a free parameter even when the setup fixes it (the
        profile with guess="catch"); ``prior`` adds the width and lapse penalties and
        bounds the slope to the width prior's support (the interval); without it the
        slope is bounded to 0.01-1000 per tested range (the estimate).
        """
        c = self.counts
        return BinomialProblem(
            model=c.model,
            u=c.u,
            n=n,
            k=k,
            n0=n0,
            k0=k0,
            guess_fixed=None if self.guess == "fit" or free_guess else guess_fixed,
            lapse_fixed=None if self.lapse == "fit" else np.full(n.shape[0], float(self.lapse)),
            guess_max=self.guess_max,
            lapse_max=self.lapse_max,
            m_bounds=(c.u_min - 2.0 * c.span, c.u_max + 2.0 * c.span),
            s_bounds=self.s_prior_bounds if prior else (math.log(0.01 / c.span), math.log(1000.0 / c.span)),
            width_prior=self.width_prior if prior else None,
            lapse_prior_b=LAPSE_PRIOR_B if prior else 0.0,
        )

    def fixed_guess(self, B: int) -> np.ndarray | None:
        """gamma (B,) when the setup fixes it (a number, or the identical pairs' rate), else None."""
        if self.guess == "fit":
            return None
        return np.full(B, self.counts.catch_rate if self.guess == "catch" else float(self.guess))

    def observed(self, B: int, **kwargs) -> BinomialProblem:
        """B copies of the observed counts (a multi-start or a profile grid); ``kwargs`` as ``problem``."""
        c = self.counts
        L = c.levels.size
        return self.problem(
            np.broadcast_to(c.n, (B, L)),
            np.broadcast_to(c.k, (B, L)),
            np.full(B, float(c.n0)),
            np.full(B, float(c.k0)),
            self.fixed_guess(B),
            **kwargs,
        )
