"""What the data say about the threshold beyond its estimate: separation, the penalised
profile-likelihood interval, and the bootstrap.

- ``step_nll``: the likelihood of the best step function at every cut between tested
  levels (the model's slope -> infinity limit), in closed form; a fit that cannot beat
  the best step means (quasi-)separated data, a threshold bracketed by two levels.
- ``profile_interval``: {m : 2 [min_nuisance pNLL(m) - min pNLL] <= chi2_1(level)} over
  a grid on the tested range, one batched solve (Venzon & Moolgavkar 1988, Applied
  Statistics 37), pNLL with psignifit 4's width prior and a Beta(1, 20) lapse prior
  (Schuett et al. 2016); ends the data cannot close inside the range are open.
- ``bootstrap_replicates``: parametric or nonparametric replicates refitted in one
  batched solve (Wichmann & Hill 2001, Perception & Psychophysics 63(8)).

The choice of method and its measured coverage are in ``analysis.psychometric``'s
docstring. Pure numpy; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

from .psychometric_solver import BinomialProblem, FitSetup, binom_nll, solve

__all__ = ["PROFILE_GRID", "bootstrap_replicates", "profile_interval", "step_nll"]

PROFILE_GRID = 81  # grid points over the tested range (plus the estimate)


def step_nll(setup: FitSetup) -> tuple[np.ndarray, np.ndarray]:
    """NLL of the best step function at every cut between adjacent tested levels.

    The step is the model's slope -> infinity limit: P = gamma below the cut and
    1 - lambda above, with gamma and lambda at their ML values inside their bounds
    (closed form: a clipped proportion). Identical-pair trials enter as in the smooth
    fit. Returns (nll per cut (L-1,), index of the level just below each cut (L-1,)).
    """
    c = setup.counts
    n, k = c.n, c.k
    cn, ck = np.cumsum(n)[:-1], np.cumsum(k)[:-1]
    an, ak = n.sum() - cn, k.sum() - ck
    if setup.guess == "fit":
        g = np.clip((ck + c.k0) / (cn + c.n0), 0.0, setup.guess_max)
    else:
        g = np.full(cn.shape, c.catch_rate if setup.guess == "catch" else float(setup.guess))
    if setup.lapse == "fit":
        lam = np.clip(1.0 - ak / an, 0.0, setup.lapse_max)
    else:
        lam = np.full(cn.shape, float(setup.lapse))
    nll = np.array(
        [
            binom_nll(ck[j], cn[j], g[j])
            + binom_nll(ak[j], an[j], 1.0 - lam[j])
            + (binom_nll(c.k0, c.n0, g[j]) if c.n0 else 0.0)
            for j in range(cn.size)
        ]
    )
    return nll, np.arange(cn.size)


def profile_interval(
    problem: Callable[..., BinomialProblem],
    setup: FitSetup,
    theta_ref: np.ndarray,
    m_hat: float,
    ci_level: float,
    s_bounds: tuple[float, float],
) -> tuple[tuple[float, float], float]:
    """Penalised profile-likelihood interval of the location m (u units).

    ``problem(B)``: the penalised problem over B copies of the observed counts;
    ``theta_ref`` (1, P): the start of the nuisance parameters; ``m_hat``: the estimate;
    ``s_bounds``: the log-slope range the slope starts are clipped to. The profile is the
    min over the nuisance parameters (slope from three starts, lapse, gamma when free) of
    NLL + the penalties at each grid point. Returns ((low, high), min profile); an end
    still inside the cutoff at the edge of the tested range is open (-inf / +inf); when
    the whole range is excluded, the interval lies beyond it on m_hat's side.
    """
    u = setup.counts.u
    u_min, u_max = float(u[0]), float(u[-1])
    grid = np.union1d(np.linspace(u_min, u_max, PROFILE_GRID), np.clip([m_hat], u_min, u_max))
    G = grid.size
    s_starts = np.unique(
        np.clip([theta_ref[0, 1], math.log(3.0 / (u_max - u_min)), math.log(12.0 / (u_max - u_min))], *s_bounds)
    )
    S = s_starts.size
    theta0 = np.repeat(theta_ref, G * S, axis=0)
    theta0[:, 0] = np.repeat(grid, S)
    theta0[:, 1] = np.tile(s_starts, G)
    prob = problem(G * S)
    prob.fix_m = True
    theta_fit, nll = solve(prob, theta0)
    prof = nll.reshape(G, S).min(axis=1)
    # the penalised optimum with m free, started from the best grid point
    best = int(np.argmin(nll))
    _, nll_free = solve(problem(1), theta_fit[best : best + 1])
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


def bootstrap_replicates(
    setup: FitSetup, theta_hat: np.ndarray, p_hat: np.ndarray, g_hat: float, B: int, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """B bootstrap replicates refitted from ``theta_hat`` (1, P) in one batched solve.

    ``kind``: "parametric" draws the counts from the fitted rates ``p_hat`` (L,) at the
    tested levels (the identical pairs from gamma: ``g_hat`` when fitted, else their own
    rate); "nonparametric" resamples the trials (a multinomial over levels, then binomials
    at the observed rates). With guess="catch" each replicate's gamma is its own identical
    pairs' rate, so that uncertainty propagates. Returns (location m in u units (B,),
    slope beta (B,)).
    """
    c = setup.counts
    n, k, n0, k0 = c.n, c.k, c.n0, c.k0
    L = n.size
    N = n.sum()
    if kind == "parametric":
        nb = np.broadcast_to(n, (B, L)).copy()
        kb = rng.binomial(nb.astype(np.int64), p_hat).astype(float)
        g_sim = g_hat if setup.guess == "fit" else (k0 / n0 if n0 else 0.0)
        k0b = rng.binomial(n0, g_sim, size=B).astype(float) if n0 else np.zeros(B)
    else:
        nb = rng.multinomial(int(N), n / N, size=B).astype(float)
        kb = rng.binomial(nb.astype(np.int64), k / n).astype(float)
        k0b = rng.binomial(n0, k0 / n0, size=B).astype(float) if n0 else np.zeros(B)
    n0b = np.full(B, float(n0))
    if setup.guess == "fit":
        guess_b = None
    elif setup.guess == "catch":
        guess_b = k0b / n0
    else:
        guess_b = np.full(B, float(setup.guess))
    prob = setup.problem(nb, kb, n0b, k0b, guess_b)
    theta, _ = solve(prob, np.repeat(theta_hat, B, axis=0))
    return theta[:, 0], np.exp(theta[:, 1])
