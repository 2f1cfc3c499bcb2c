"""Psychometric fitting: ML correctness, threshold recovery, CI coverage, edge cases."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

from analysis.physical import physical_mapper
from analysis.psychometric import fit_groups, fit_psychometric

LEVELS = np.linspace(0.0, 10.0, 7)


def p_logistic(x, thr, slope, guess, lapse):
    return guess + (1 - guess - lapse) / (1 + np.exp(-slope * (x - thr)))


def p_weibull(x, thr, shape, guess, lapse):
    return guess + (1 - guess - lapse) * (1 - np.exp(-np.log(2) * (x / thr) ** shape))


def simulate(rng, p_fn, levels, n_per_level, *params):
    x = np.repeat(levels, n_per_level)
    return x, (rng.random(x.size) < p_fn(x, *params)).astype(int)


def test_solver_matches_scipy_minimize():
    rng = np.random.default_rng(2)
    x, y = simulate(rng, p_logistic, LEVELS, 30, 5.0, 1.0, 0.1, 0.02)
    fit = fit_psychometric(x, y, guess=0.1, lapse="fit")

    def nll(th):
        p = np.clip(p_logistic(x, th[0], np.exp(th[1]), 0.1, th[2]), 1e-12, 1 - 1e-12)
        return -(y * np.log(p) + (1 - y) * np.log1p(-p)).sum()

    ref = optimize.minimize(nll, [5.0, 0.0, 0.02], method="L-BFGS-B", bounds=[(-20, 30), (-5, 5), (0, 0.1)])
    assert ref.success
    assert fit.neg_log_likelihood <= ref.fun + 1e-6
    assert fit.threshold == pytest.approx(ref.x[0], abs=1e-3)
    assert math.log(fit.slope) == pytest.approx(ref.x[1], abs=1e-3)


@pytest.mark.parametrize("model", ["logistic", "weibull"])
@pytest.mark.parametrize("guess", ["fit", "catch", 0.1])
def test_threshold_recovery(model, guess):
    # 9 levels x 150 trials: the threshold SE is about 0.1 level units (logistic) and
    # about 3% (Weibull); tolerances are ~4 SE so a correct fitter passes for any
    # seed while a biased one (wrong F = 0.5 definition, wrong guess handling) fails.
    rng = np.random.default_rng(7)
    if model == "logistic":
        levels, true = np.linspace(0, 10, 9), dict(thr=4.0, slope=1.2)
        x, y = simulate(rng, p_logistic, levels, 150, true["thr"], true["slope"], 0.1, 0.03)
        tol = 0.4
    else:
        levels, true = np.geomspace(0.5, 20, 9), dict(thr=4.0, slope=2.0)
        x, y = simulate(rng, p_weibull, levels, 150, true["thr"], true["slope"], 0.1, 0.03)
        tol = 0.12 * true["thr"]
    catch = (rng.random(300) < 0.1).astype(int)
    fit = fit_psychometric(x, y, catch=catch, model=model, guess=guess, lapse="fit")
    assert fit.estimable, fit.reason
    assert abs(fit.threshold - true["thr"]) < tol
    assert fit.slope == pytest.approx(true["slope"], rel=0.5)
    assert abs(fit.guess_rate - 0.1) < 0.05
    # the threshold is where P is halfway between gamma and 1 - lambda
    assert fit.predict(fit.threshold) == pytest.approx((fit.guess_rate + 1 - fit.lapse_rate) / 2)


@pytest.mark.parametrize("kind, guess, reps", [("parametric", 0.1, 150), ("nonparametric", "catch", 120)])
def test_bootstrap_ci_coverage_is_near_nominal(kind, guess, reps):
    # Small experiment (7 levels x 30 trials), 95% percentile CIs from 200 replicates.
    # With `reps` repetitions the coverage estimate has SE ~ 0.02, so [0.87, 0.995]
    # is about 4 SE below and 2 SE above nominal: a fitter whose CIs are too narrow
    # (e.g. ignoring the uncertainty of gamma) or too wide fails.
    rng = np.random.default_rng(11)
    thr, hits, slope_hits, n_est = 5.0, 0, 0, 0
    for _ in range(reps):
        x, y = simulate(rng, p_logistic, LEVELS, 30, thr, 1.0, 0.1, 0.0)
        catch = (rng.random(40) < 0.1).astype(int)
        fit = fit_psychometric(x, y, catch=catch, guess=guess, lapse=0.0, n_boot=200, rng=rng, bootstrap=kind)
        if not fit.estimable:
            continue
        n_est += 1
        hits += fit.threshold_ci[0] <= thr <= fit.threshold_ci[1]
        slope_hits += fit.slope_ci[0] <= 1.0 <= fit.slope_ci[1]
    assert n_est >= 0.97 * reps
    assert 0.87 <= hits / n_est <= 0.995
    assert 0.85 <= slope_hits / n_est <= 0.995


def _reason(x, y, **kw):
    fit = fit_psychometric(x, y, **kw)
    assert not fit.estimable
    assert math.isnan(fit.threshold) and math.isnan(fit.slope)
    return fit.reason


def test_edge_cases_are_not_estimable():
    rng = np.random.default_rng(3)
    x = np.repeat(LEVELS, 10)
    assert "no trials" in _reason([], [])
    assert "all responses 'same'" in _reason(x, np.zeros(x.size, int))
    assert "all responses 'different'" in _reason(x, np.ones(x.size, int))
    assert "only 5 trials" in _reason(LEVELS[:5], [0, 0, 1, 1, 1])
    assert "single level" in _reason(np.full(40, 3.0), rng.integers(0, 2, 40))
    assert "only 2 distinct levels" in _reason(np.repeat([1.0, 2.0], 20), np.repeat([0, 1], 20))
    # flat responses: P(different) = 0.5 everywhere
    assert "no reliable increase" in _reason(*simulate(rng, lambda v: np.full(v.shape, 0.5), LEVELS, 30))
    # decreasing responses: the monotone model cannot follow them
    assert "no reliable increase" in _reason(*simulate(rng, lambda v: 0.9 - 0.08 * v, LEVELS, 30))
    # non-monotone garbage that still rises overall, plenty of trials per level
    garbage = lambda v: np.where(np.isin(v, LEVELS[[1, 4, 5, 6]]), 0.95, 0.05)  # noqa: E731
    assert "poor fit" in _reason(*simulate(rng, garbage, LEVELS, 40), guess="fit")
    # threshold well above / below the tested range
    assert "outside the tested range" in _reason(
        *simulate(rng, p_logistic, LEVELS, 150, 16.0, 0.6, 0.05, 0.0), guess=0.05, lapse=0.0
    )
    assert "outside the tested range" in _reason(
        *simulate(rng, p_logistic, LEVELS, 150, -6.0, 0.6, 0.05, 0.0), guess=0.05, lapse=0.0
    )
    assert "no identical-pair" in _reason(x, (x > 5).astype(int), guess="catch")


def test_bad_input_raises():
    with pytest.raises(ValueError, match="0/1"):
        fit_psychometric([1, 2, 3], [0, 2, 1])
    with pytest.raises(ValueError, match="NaN"):
        fit_psychometric([1, np.nan, 3], [0, 1, 1])
    with pytest.raises(ValueError, match="Weibull"):
        fit_psychometric([0.0, 1, 2], [0, 1, 1], model="weibull")
    with pytest.raises(ValueError, match="rng"):
        fit_psychometric([0.0, 1, 2], [0, 1, 1], n_boot=10)
    with pytest.raises(ValueError, match="model"):
        fit_psychometric([0.0, 1, 2], [0, 1, 1], model="probit")


def test_physical_units_callable_and_table():
    rng = np.random.default_rng(5)
    x, y = simulate(rng, p_logistic, LEVELS, 60, 5.0, 1.5, 0.05, 0.0)
    # level -> SNR in dB, decreasing (more perturbation = lower SNR): CI must come out ordered
    table = pd.DataFrame({"level": LEVELS, "snr_db": 40.0 - 4.0 * LEVELS})
    fit_t = fit_psychometric(x, y, guess=0.05, lapse=0.0, n_boot=100, rng=rng, to_physical=table)
    fit_c = fit_psychometric(x, y, guess=0.05, lapse=0.0, to_physical=lambda v: 40.0 - 4.0 * v)
    assert fit_t.threshold_physical == pytest.approx(40.0 - 4.0 * fit_t.threshold)
    assert fit_c.threshold_physical == pytest.approx(fit_t.threshold_physical)
    lo, hi = fit_t.threshold_physical_ci
    assert lo < fit_t.threshold_physical < hi
    m = physical_mapper({0: 1.0, 10: 2.0})
    assert math.isnan(float(m(11.0))) and float(m(5.0)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="monotone"):
        physical_mapper({0: 1.0, 5: 3.0, 10: 2.0})


def test_fit_groups_per_family_and_pooled():
    rng = np.random.default_rng(9)
    parts = []
    for fam, thr in (("noise", 3.0), ("mp3", 7.0)):
        x, y = simulate(rng, p_logistic, LEVELS, 60, thr, 1.5, 0.05, 0.0)
        parts.append(pd.DataFrame({"family": fam, "level": x, "response_different": y, "identical": False}))
        parts.append(
            pd.DataFrame(
                {
                    "family": fam,
                    "level": 0.0,
                    "identical": True,
                    "response_different": (rng.random(50) < 0.05).astype(int),
                }
            )
        )
    parts.append(
        pd.DataFrame({"family": "tiny", "level": [1.0, 2.0, 3.0], "response_different": [0, 1, 1], "identical": False})
    )
    df = pd.concat(parts, ignore_index=True)
    res = fit_groups(df, by="family", catch_col="identical", guess="fit", n_boot=50, rng=rng).set_index("family")
    assert abs(res.loc["noise", "threshold"] - 3.0) < 0.6
    assert abs(res.loc["mp3", "threshold"] - 7.0) < 0.6
    assert res.loc["noise", "n_catch"] == 50
    assert not res.loc["tiny", "estimable"] and "only 3 trials" in res.loc["tiny", "reason"]
    pooled = fit_groups(df, by=None, catch_col="identical", guess="fit")
    assert len(pooled) == 1 and pooled.loc[0, "group"] == "pooled"
    with pytest.raises(ValueError, match="participant"):
        fit_groups(df, by=["participant"])


@pytest.mark.parametrize("model", ["logistic", "weibull"])
def test_fit_and_solver_use_the_observer_psychometric_function(model):
    """One psychometric function: the fitted curve is ``observer.psychometric`` at the fitted
    parameters, and the solver's F(z) is ``observer.cdf`` with an exact derivative."""
    from analysis.psychometric_solver import standard_cdf
    from listening_test.procedures.observer import cdf, psychometric

    rng = np.random.default_rng(4)
    levels = LEVELS + 1.0
    x, y = simulate(rng, p_logistic if model == "logistic" else p_weibull, levels, 30, 5.0, 1.5, 0.05, 0.02)
    fit = fit_psychometric(x, y, model=model, guess=0.05)
    assert fit.estimable and not fit.separated
    grid = np.linspace(1.0, 11.0, 9)
    expected = psychometric(grid, fit.threshold, fit.slope, fit.guess_rate, fit.lapse_rate, model)
    assert np.allclose(fit.predict(grid), expected, rtol=0, atol=1e-15)

    z = np.linspace(-6.0, 3.0, 19)
    f, df = standard_cdf(model, z)
    h = 1e-6
    numeric = (standard_cdf(model, z + h)[0] - standard_cdf(model, z - h)[0]) / (2 * h)
    assert np.allclose(df, numeric, rtol=1e-6, atol=1e-10)
    # z = slope * (u - m): the logistic in x, the Weibull in log x
    thr, slope = 4.0, 1.7
    u = np.log(grid) if model == "weibull" else grid
    m = math.log(thr) if model == "weibull" else thr
    assert np.allclose(standard_cdf(model, slope * (u - m))[0], cdf(grid, thr, slope, model), rtol=0, atol=1e-12)
