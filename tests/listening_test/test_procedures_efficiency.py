"""Psi's fast paths give the same answers as the plain ones, and the QUEST+ peer of
benchmarks/procedure_efficiency.py models the same observers on the same grid (so its
trial counts are a fair comparison). Timings live in the benchmark, not here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from listening_test.procedures import make_procedure, restore_procedure
from listening_test.procedures.bayesian import PsiMethod
from listening_test.procedures.observer import SimulatedObserver, psychometric
from tests.benchmark_modules import load_benchmark

LEVELS = list(np.linspace(0, 100, 21))


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("procedure_efficiency")


def _walk(proc, obs, trials, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(trials):
        level = proc.next_level()
        proc.update(level, obs.respond(level, rng))
    return proc


def _plain_posterior(proc: PsiMethod) -> np.ndarray:
    """The posterior recomputed the plain way: prior x each answer's likelihood, normalised each step."""
    post = np.full(proc._table.shape[1:], 1.0 / proc._table[0].size)
    for level, resp in proc.state_dict()["history"]:
        index = proc.levels.index(level)
        like = proc._table[index] if resp else 1.0 - proc._table[index]
        post = post * like
        post = post / post.sum()
    return post


@pytest.mark.parametrize(
    "function,observer",
    [
        ("logistic", SimulatedObserver(37.0, 0.15, 0.1, 0.03)),
        ("weibull", SimulatedObserver(60.0, 3.0, 0.05, 0.0, function="weibull")),
    ],
)
def test_live_and_restored_posteriors_equal_the_plain_computation_bit_for_bit(function, observer):
    proc = _walk(PsiMethod(LEVELS, function=function, target_sd=None, max_trials=60), observer, 45)
    plain = _plain_posterior(proc)
    restored = restore_procedure(json.loads(json.dumps(proc.state_dict())))
    assert np.array_equal(proc._posterior, plain)
    assert np.array_equal(restored._posterior, plain)
    assert restored.next_level() == proc.next_level()
    assert np.array_equal(proc._table_same, 1.0 - proc._table)


def test_restore_snaps_levels_that_are_not_exact_rungs():
    # a hand-written state: integer and off-ladder levels still land on the nearest rung
    proc = make_procedure("bayesian", LEVELS)
    state = proc.state_dict()
    state["history"] = [[50, 1], [24.9, 0], [75.00000001, 1], [np.float64(40.0), 0]]
    restored = restore_procedure(state)
    assert [h[0] for h in restored.state_dict()["history"]] == [50.0, 25.0, 75.0, 40.0]
    exact = restore_procedure({**state, "history": [[50.0, 1], [25.0, 0], [75.0, 1], [40.0, 0]]})
    assert np.array_equal(restored._posterior, exact._posterior)


def test_questplus_peer_models_the_logistic_observers_psi_models(bench):
    # The package has no logistic: its normal CDF with sd = 1.702 / slope stands in; both
    # pass through the JND (F = 0.5) and differ by < 0.01 anywhere on the default slope grid.
    from scipy.stats import norm

    psi = make_procedure("bayesian", LEVELS)
    x = np.linspace(-300, 300, 6001)
    for slope in psi.slopes:
        logistic = psychometric(x, 0.0, slope)
        normal = norm.cdf(x, 0.0, bench.LOGISTIC_TO_NORMAL_SD / slope)
        assert np.max(np.abs(logistic - normal)) < 0.01
    q = bench.questplus_template(LEVELS, "logistic")
    assert np.array_equal(q.param_domain["mean"], psi.thresholds)
    assert np.allclose(np.sort(bench.LOGISTIC_TO_NORMAL_SD / q.param_domain["sd"]), psi.slopes)
    assert list(q.param_domain["lower_asymptote"]) == psi.config["false_alarm_rates"]
    assert list(q.param_domain["lapse_rate"]) == psi.config["lapse_rates"]
    assert np.allclose(q.prior.values, 1.0 / q.prior.size)  # uniform, as Psi's


@pytest.mark.parametrize("function", ["logistic", "weibull"])
def test_questplus_track_reads_the_jnd_at_f_half_off_its_posterior(bench, function):
    # Weibull: QUEST+'s threshold t is the F = 1 - 1/e point; the JND is t (ln 2)^(1/beta).
    from questplus import psychometric_function as pf

    track = bench.QuestPlusTrack(bench.questplus_template(LEVELS, function), LEVELS, function, max_trials=40)
    names = list(track.q.param_domain)
    i, j = 40, 7  # one grid point holds all the posterior mass
    point = np.zeros(track.q.posterior.shape)
    point[i, j, 0, 0] = 1.0
    track.q.posterior.values[...] = point
    track.n_trials = 1
    a, b = (track.q.param_domain[n][k] for n, k in zip(names[:2], (i, j)))
    jnd = track.estimate()
    if function == "logistic":
        assert jnd == pytest.approx(a)
        p = pf.norm_cdf(intensity=jnd, mean=a, sd=b, lower_asymptote=0.0, lapse_rate=0.0)
    else:
        assert jnd == pytest.approx(a * np.log(2.0) ** (1.0 / b))
        p = pf.weibull(intensity=jnd, threshold=a, slope=b, lower_asymptote=0.0, lapse_rate=0.0, scale="linear")
    assert float(np.squeeze(p.values)) == pytest.approx(0.5)
    assert track.threshold_sd() == pytest.approx(0.0, abs=1e-9)


def test_questplus_track_converges_on_a_logistic_observer(bench):
    observer = SimulatedObserver(63.0, 0.3, 0.05, 0.02)
    track = bench.QuestPlusTrack(bench.questplus_template(LEVELS, "logistic"), LEVELS, "logistic", max_trials=40)
    estimates, used = bench.run_track(track, observer, np.random.default_rng(4), 40)
    assert used == 40 and track.finished and track.stop_reason == "max_trials"
    assert abs(estimates[-1] - observer.threshold) < 8.0 and track.threshold_sd() < 8.0
    assert len(track.selection_s) == 40  # one next_stim computation per trial, none wasted


def test_questplus_track_stops_on_psis_rule(bench):
    track = bench.QuestPlusTrack(
        bench.questplus_template(LEVELS, "logistic"), LEVELS, "logistic", max_trials=60, target_sd=6.0, min_trials=8
    )
    _, used = bench.run_track(track, SimulatedObserver(50.0, 0.5), np.random.default_rng(1), 60)
    assert track.stop_reason == "precision" and 8 <= used < 60
    assert track.next_level() is None
