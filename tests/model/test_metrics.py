from __future__ import annotations

import numpy as np
import torch

from model.metrics import accuracy, binary_cross_entropy, roc_auc


def test_roc_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 60).astype(float)  # many ties
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert abs(roc_auc(scores, labels) - brute) < 1e-12
    assert roc_auc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0 and roc_auc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert np.isnan(roc_auc([1, 2], [1, 1]))


def test_bce_and_accuracy_match_torch():
    rng = np.random.default_rng(1)
    z, y = rng.normal(0, 5, 50), rng.integers(0, 2, 50)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(z), torch.tensor(y, dtype=torch.float64))
    assert abs(binary_cross_entropy(z, y) - float(ref)) < 1e-12
    assert accuracy([-1.0, 2.0, 3.0], [0, 1, 0]) == 2 / 3


def test_roc_auc_is_the_analysis_one():
    """One ROC-AUC: model.metrics re-exports analysis.agreement's (no second copy)."""
    from analysis.agreement import roc_auc as home

    assert roc_auc is home
    assert roc_auc([0.1, 0.3, 0.35, 0.8], [False, True, False, True]) == 0.75
