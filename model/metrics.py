"""Agreement between a metric and same/different judgments: accuracy, ROC-AUC, BCE."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(scores, labels) -> float:
    """ROC-AUC as the Mann-Whitney rank statistic (ties count one half).

    P(score of a random "different" pair > score of a random "same" pair). NaN when
    one class is missing.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def binary_cross_entropy(logits, labels) -> float:
    """Mean BCE of logits, computed stably: log(1 + e^z) - y·z."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.size == 0:
        return float("nan")
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def accuracy(logits, labels) -> float:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if z.size == 0:
        return float("nan")
    return float(np.mean((z > 0) == y))


def judgment_metrics(distances, logits, labels) -> dict[str, float]:
    """accuracy and BCE of the head; ROC-AUC of the distance itself (what ships)."""
    return {
        "accuracy": accuracy(logits, labels),
        "roc_auc": roc_auc(distances, labels),
        "bce": binary_cross_entropy(logits, labels),
        "n": int(np.asarray(labels).size),
    }
