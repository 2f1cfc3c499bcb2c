"""Pairwise preference statistics: share, Clopper-Pearson CI, binomial test, cluster bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.pairwise import binomial_two_sided_p, clopper_pearson, cluster_bootstrap_share, preference_share


def test_clopper_pearson_known_values():
    # closed forms at the edges: k = 0 -> upper = 1 - (α/2)^(1/n); k = n -> lower = (α/2)^(1/n)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-9)
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-9)
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-5) and high == pytest.approx(0.812914, abs=1e-5)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError):
        clopper_pearson(1, 2, confidence=1.0)


def test_clopper_pearson_covers_at_least_nominally():
    # exact interval: coverage >= 95% at every true p (checked exactly over all k for n = 20)
    from scipy.stats import binom

    n = 20
    bounds = [clopper_pearson(k, n) for k in range(n + 1)]
    for p in np.linspace(0.01, 0.99, 41):
        coverage = sum(binom.pmf(k, n, p) for k, (lo, hi) in enumerate(bounds) if lo <= p <= hi)
        assert coverage >= 0.95 - 1e-9


def test_binomial_p_values():
    assert binomial_two_sided_p(8, 10) == pytest.approx(112 / 1024)  # P(X<=2) + P(X>=8) at p = 0.5
    assert binomial_two_sided_p(5, 10) == pytest.approx(1.0)
    assert binomial_two_sided_p(0, 0) == 1.0
    assert binomial_two_sided_p(10, 10) == pytest.approx(2 / 1024)


def test_preference_share_excludes_ties_and_rejects_unknown_labels():
    result = preference_share(["b"] * 7 + ["a"] * 3 + ["tie", "None", None, "no preference"])
    assert (result.wins, result.losses, result.ties, result.n) == (7, 3, 4, 10)
    assert result.share == pytest.approx(0.7)
    assert (result.ci_low, result.ci_high) == pytest.approx(clopper_pearson(7, 10))
    assert result.p_value == pytest.approx(binomial_two_sided_p(7, 10))
    assert "7/10" in result.describe() and "4 ties" in result.describe()
    swapped = preference_share(["sysA", "sysB", "sysB"], system="sysA", other="sysB")
    assert (swapped.wins, swapped.n) == (1, 3)
    empty = preference_share(["tie"])
    assert empty.n == 0 and math.isnan(empty.share) and empty.to_dict()["share"] is None and empty.p_value == 1.0
    with pytest.raises(ValueError, match="unknown choice 'c'"):
        preference_share(["a", "c"])


def _clusters(p_per_cluster, n_per_cluster, seed):
    rng = np.random.default_rng(seed)
    n = np.full(len(p_per_cluster), n_per_cluster)
    return rng.binomial(n, p_per_cluster), n


def test_cluster_bootstrap_widens_when_clusters_disagree():
    # 20 listeners x 40 judgments, pooled share 0.75 either way: identical listeners give about the
    # binomial width; half at 0.95 and half at 0.55 give about 3x (between-listener SD 0.2)
    same_w, same_n = _clusters(np.full(20, 0.75), 40, seed=1)
    split_w, split_n = _clusters(np.repeat([0.95, 0.55], 10), 40, seed=1)
    same = cluster_bootstrap_share(same_w, same_n, n_boot=2000, seed=0)
    split = cluster_bootstrap_share(split_w, split_n, n_boot=2000, seed=0)
    cp_same = clopper_pearson(int(same_w.sum()), int(same_n.sum()))
    assert same.share == pytest.approx(same_w.sum() / same_n.sum())
    assert 0.7 < (same.ci_high - same.ci_low) / (cp_same[1] - cp_same[0]) < 1.4
    cp_split = clopper_pearson(int(split_w.sum()), int(split_n.sum()))
    assert (split.ci_high - split.ci_low) > 2 * (cp_split[1] - cp_split[0])
    assert split.ci_low < 0.75 < split.ci_high and same.ci_low < 0.75 < same.ci_high


def test_cluster_bootstrap_is_seeded_and_checks_input():
    w, n = _clusters(np.full(12, 0.6), 10, seed=2)
    a = cluster_bootstrap_share(w, n, n_boot=500, seed=7)
    assert a == cluster_bootstrap_share(w, n, n_boot=500, seed=7)
    assert (a.ci_low, a.ci_high) != (
        cluster_bootstrap_share(w, n, n_boot=500, seed=8).ci_low,
        cluster_bootstrap_share(w, n, n_boot=500, seed=8).ci_high,
    )
    assert a.n_clusters == 12 and a.n_boot == 500 and a.to_dict()["seed"] == 7
    one = cluster_bootstrap_share([3], [4])
    assert one.share == 0.75 and math.isnan(one.ci_low) and one.to_dict()["ci_low"] is None
    assert math.isnan(cluster_bootstrap_share(w, n, n_boot=0).ci_high)
    with pytest.raises(ValueError, match="wins\\[i\\] <= n\\[i\\]"):
        cluster_bootstrap_share([5], [4])
    with pytest.raises(ValueError, match="one length"):
        cluster_bootstrap_share([1, 2], [4])
