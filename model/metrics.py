"""Agreement between a metric and same/different judgments: accuracy, ROC-AUC, BCE.

ROC-AUC is ``analysis.agreement.roc_auc`` (its one home), re-exported here for the trainer.
"""

from __future__ import annotations

import numpy as np

from analysis.agreement import roc_auc

__all__ = ["accuracy", "binary_cross_entropy", "judgment_metrics", "roc_auc"]


def binary_cross_entropy(logits, labels) -> float:
    """Mean binary cross-entropy (nats) of logits z (N,) against labels y (N,) in {0, 1},
    computed stably as log(1 + e^z) - y·z (``numpy.logaddexp``); NaN for N = 0. Raises nothing."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if z.size == 0:
        return float("nan")
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def accuracy(logits, labels) -> float:
    """Share of logits (N,) whose sign (z > 0: "different") matches labels (N,); NaN for N = 0."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if z.size == 0:
        return float("nan")
    return float(np.mean((z > 0) == y))


def judgment_metrics(distances, logits, labels) -> dict[str, float]:
    """accuracy and BCE of the judgment head's logits (N,); ROC-AUC of the distances (N,)
    themselves (what ships); n. Labels (N,) are 1 for "different". Raises nothing."""
    return {
        "accuracy": accuracy(logits, labels),
        "roc_auc": roc_auc(distances, labels),
        "bce": binary_cross_entropy(logits, labels),
        "n": int(np.asarray(labels).size),
    }
