"""How well any distance agrees with listeners' same/different judgments.

``agreement(judgments, distance_fn)`` scores a callable
``distance_fn(ref_audio, test_audio, sample_rate) -> float`` (larger = more
different) the same way for every metric:

- ROC-AUC of the distance for "different" vs "same" answers (every judgment counts;
  0.5 = uninformative);
- accuracy at the best threshold, cross-validated: references are split into
  folds, the threshold is chosen on the training folds and applied to the held-out
  one, so a metric cannot win by memorising clips;
- Spearman correlation between the distance and the observed P(different) per pair
  condition (reference, family, level);
- calibration: a one-feature logistic regression P(different | distance) fitted on
  the training folds, its held-out predictions binned against the observed rates
  (Brier score, log loss, and a plot).

Each distinct audio pair is scored once; clips are loaded once through an
``AudioCache`` that can be shared between metrics. A pair whose distance raises
is dropped with a note (the first error is quoted).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

DistanceFn = Callable[[np.ndarray, np.ndarray, int], float]


class AudioCache:
    """Loads each clip once (float32 mono via soundfile) and keeps it."""

    def __init__(self) -> None:
        self._clips: dict[str, tuple[np.ndarray, int]] = {}

    def __call__(self, path: str | os.PathLike) -> tuple[np.ndarray, int]:
        key = str(path)
        if key not in self._clips:
            import soundfile as sf

            try:
                audio, sr = sf.read(key, dtype="float32", always_2d=True)
            except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
                raise OSError(f"{key}: cannot read audio ({exc})") from None
            self._clips[key] = (np.ascontiguousarray(audio.mean(axis=1), dtype=np.float32), int(sr))
        return self._clips[key]

    def __len__(self) -> int:
        return len(self._clips)


@dataclass
class AgreementResult:
    name: str
    n_judgments: int = 0
    n_pairs: int = 0
    n_conditions: int = 0
    n_failed_pairs: int = 0
    roc_auc: float = math.nan
    cv_accuracy: float = math.nan
    majority_accuracy: float = math.nan  # always answering the more common label
    threshold_mean: float = math.nan  # mean of the per-fold thresholds
    n_folds: int = 0
    spearman_rho: float = math.nan
    spearman_p: float = math.nan
    brier: float = math.nan
    log_loss: float = math.nan
    notes: list[str] = field(default_factory=list)
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)
    pairs: pd.DataFrame = field(default_factory=pd.DataFrame)  # per judged pair: distance
    conditions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def as_row(self) -> dict:
        return dict(
            metric=self.name,
            n_judgments=self.n_judgments,
            n_pairs=self.n_pairs,
            n_conditions=self.n_conditions,
            n_failed_pairs=self.n_failed_pairs,
            roc_auc=self.roc_auc,
            cv_accuracy=self.cv_accuracy,
            majority_accuracy=self.majority_accuracy,
            n_folds=self.n_folds,
            threshold_mean=self.threshold_mean,
            spearman_rho=self.spearman_rho,
            spearman_p=self.spearman_p,
            brier=self.brier,
            log_loss=self.log_loss,
            notes="; ".join(self.notes),
        )


# ----------------------------------------------------------------------------- pure statistics


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` (N,) for ``labels`` (N,; truthy = "different").

    P(score of a random "different" item > score of a random "same" item), ties counting
    one half: the Mann-Whitney U statistic over n1 * n0 (Hanley & McNeil 1982, Radiology
    143(1)), from average ranks (``scipy.stats.rankdata``). 0.5 is uninformative. Returns
    NaN when one class is missing; raises nothing. The one ROC-AUC of jndlab
    (``model.metrics`` uses it too).
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(labels).astype(bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = stats.rankdata(scores)  # average ranks for ties
    return float((ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def best_threshold(scores, labels) -> tuple[float, float]:
    """Threshold t maximising accuracy of "different iff score > t"; returns (t, accuracy)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    uniq_end = np.r_[np.flatnonzero(np.diff(s) > 0), len(s) - 1]
    # predicting "same" for the first i+1 sorted items: correct = same-labels so far + different-labels after
    same_cum = np.cumsum(1 - y)
    diff_after = y.sum() - np.cumsum(y)
    correct = same_cum[uniq_end] + diff_after[uniq_end]
    all_diff = y.sum()  # threshold below every score
    cand = np.r_[all_diff, correct]
    best = int(np.argmax(cand))
    if best == 0:
        return float(s[0] - 1e-12 - abs(s[0]) * 1e-9), float(all_diff / len(s))
    i = uniq_end[best - 1]
    t = (s[i] + s[i + 1]) / 2 if i + 1 < len(s) else s[i]
    return float(t), float(cand[best] / len(s))


def _fit_logistic(z, y, iters: int = 50) -> tuple[float, float]:
    """1-D logistic regression by Newton's method with a tiny ridge (separable data stays finite)."""
    X = np.column_stack([np.ones_like(z), z])
    w = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(X @ w, -30, 30)))
        g = X.T @ (p - y) + 1e-3 * w
        H = (X * (p * (1 - p))[:, None]).T @ X + 1e-3 * np.eye(2)
        step = np.linalg.solve(H, g)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return float(w[0]), float(w[1])


def reference_folds(references, n_folds: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Fold index per item; all items of one reference share a fold."""
    refs = np.asarray(references).astype(str)
    uniq = np.unique(refs)
    k = min(n_folds, len(uniq))
    perm = rng.permutation(len(uniq))
    fold_of = {uniq[j]: i % k for i, j in enumerate(perm)} if k else {}
    return np.array([fold_of[r] for r in refs], dtype=int), k


def score_distances(
    d: np.ndarray,
    labels: np.ndarray,
    references,
    conditions: pd.DataFrame | None,
    *,
    n_folds: int,
    rng: np.random.Generator,
    name: str = "metric",
    notes: list[str] | None = None,
) -> AgreementResult:
    """All statistics from per-judgment distances (pure)."""
    res = AgreementResult(name=name, n_judgments=len(d), notes=list(notes or []))
    d, labels = np.asarray(d, float), np.asarray(labels, int)
    if len(d) == 0:
        res.notes.append("no judgments with a distance")
        return res
    res.roc_auc = roc_auc(d, labels)
    if not np.isfinite(res.roc_auc):
        res.notes.append("ROC-AUC undefined: every answer was the same")
    res.majority_accuracy = float(max(labels.mean(), 1 - labels.mean()))
    folds, k = reference_folds(references, n_folds, rng)
    pred_p = np.full(len(d), np.nan)
    correct = np.zeros(len(d), bool)
    mu, sd = float(np.mean(d)), float(np.std(d)) or 1.0
    z = (d - mu) / sd
    if k < 2:
        res.notes.append("fewer than 2 references: threshold and calibration are in-sample (no cross-validation)")
        t, _ = best_threshold(d, labels)
        correct = (d > t).astype(int) == labels
        a, b = _fit_logistic(z, labels.astype(float))
        pred_p = 1 / (1 + np.exp(-(a + b * z)))
        thresholds = [t]
        res.n_folds = 1
    else:
        thresholds = []
        for f in range(k):
            test = folds == f
            train = ~test
            t, _ = best_threshold(d[train], labels[train])
            thresholds.append(t)
            correct[test] = (d[test] > t).astype(int) == labels[test]
            a, b = _fit_logistic(z[train], labels[train].astype(float))
            pred_p[test] = 1 / (1 + np.exp(-(a + b * z[test])))
        res.n_folds = k
    res.cv_accuracy = float(correct.mean())
    res.threshold_mean = float(np.mean(thresholds))
    pc = np.clip(pred_p, 1e-6, 1 - 1e-6)
    res.brier = float(np.mean((pred_p - labels) ** 2))
    res.log_loss = float(-np.mean(labels * np.log(pc) + (1 - labels) * np.log(1 - pc)))
    n_bins = int(min(10, max(2, len(d) // 20)))
    edges = np.unique(np.quantile(pred_p, np.linspace(0, 1, n_bins + 1)))
    idx = np.clip(np.searchsorted(edges, pred_p, side="right") - 1, 0, max(len(edges) - 2, 0))
    cal = pd.DataFrame({"bin": idx, "predicted": pred_p, "observed": labels, "distance": d})
    res.calibration = (
        cal.groupby("bin")
        .agg(
            n=("observed", "size"),
            predicted=("predicted", "mean"),
            observed=("observed", "mean"),
            distance=("distance", "mean"),
        )
        .reset_index(drop=True)
    )
    if conditions is not None and len(conditions):
        res.conditions = conditions
        res.n_conditions = len(conditions)
        x, y = conditions["distance"].to_numpy(float), conditions["p_different"].to_numpy(float)
        if len(conditions) < 3:
            res.notes.append(f"Spearman needs >= 3 pair conditions, got {len(conditions)}")
        elif np.ptp(x) == 0 or np.ptp(y) == 0:
            res.notes.append("Spearman undefined: distance or P(different) is constant across conditions")
        else:
            rho, p = stats.spearmanr(x, y)
            res.spearman_rho, res.spearman_p = float(rho), float(p)
    return res


# ----------------------------------------------------------------------------- driver


def _normalise(judgments: pd.DataFrame, audio_root) -> pd.DataFrame:
    """Accept a pairs table (ref_audio, test_audio, label) or the tidy judgment table."""
    if {"ref_audio", "test_audio", "label"} <= set(judgments.columns):
        df = judgments.copy()
    elif {"reference_path", "test_path", "response_different"} <= set(judgments.columns):
        from .judgments import pairs_table

        df = pairs_table(
            judgments, kinds=tuple(sorted(judgments["kind"].dropna().unique())) if "kind" in judgments else ("main",)
        )
    else:
        raise ValueError(
            "agreement: judgments need ref_audio/test_audio/label columns (or the tidy table of analysis.judgments)"
        )
    if audio_root is not None:
        root = Path(audio_root)
        df["ref_audio"] = [str(root / p) for p in df["ref_audio"]]
        df["test_audio"] = [str(root / p) for p in df["test_audio"]]
    if "reference" not in df:
        df["reference"] = df["ref_audio"]
    for col in ("family", "level"):
        if col not in df:
            df[col] = "" if col == "family" else np.nan
    df["label"] = df["label"].astype(int)
    return df.reset_index(drop=True)


def pair_distances(
    pairs: pd.DataFrame, distance_fn: DistanceFn, cache: AudioCache, progress: bool = False, desc: str = "distances"
) -> tuple[pd.DataFrame, list[str]]:
    """Distance per distinct (ref_audio, test_audio); failures give NaN and one note."""
    from tqdm import tqdm

    uniq = pairs[["ref_audio", "test_audio"]].drop_duplicates().sort_values(["ref_audio", "test_audio"])
    out, first_err, n_err = [], None, 0
    for ref_path, test_path in tqdm(
        list(uniq.itertuples(index=False, name=None)), desc=desc, disable=not progress, leave=False
    ):
        try:
            ref, sr_ref = cache(ref_path)
            test, sr_test = cache(test_path)
            if sr_ref != sr_test:
                raise ValueError(f"sample rates differ ({sr_ref} vs {sr_test} Hz)")
            value = float(distance_fn(ref, test, sr_ref))
            if not np.isfinite(value):
                raise ValueError(f"distance is {value}")
        except Exception as exc:  # noqa: BLE001 - any metric failure drops the pair, with a note
            n_err += 1
            first_err = first_err or f"{Path(test_path).name}: {exc.__class__.__name__}: {exc}"
            value = math.nan
        out.append((ref_path, test_path, value))
    notes = [f"{n_err} of {len(uniq)} pairs failed and were dropped (first: {first_err})"] if n_err else []
    return pd.DataFrame(out, columns=["ref_audio", "test_audio", "distance"]), notes


def agreement(
    judgments: pd.DataFrame,
    distance_fn: DistanceFn,
    *,
    n_folds: int = 5,
    rng: np.random.Generator | None = None,
    name: str | None = None,
    audio_root=None,
    cache: AudioCache | None = None,
    progress: bool = False,
) -> AgreementResult:
    """Score ``distance_fn`` against same/different judgments (see module doc).

    ``judgments``: rows with ref_audio, test_audio (paths, joined to ``audio_root``
    when given), label (1 = "different"), and optionally reference (the CV unit;
    default the ref path), family and level (the pair condition for Spearman); or
    the tidy table of ``analysis.judgments`` (its pair kinds are used).
    ``rng`` assigns references to folds (default: ``numpy.random.default_rng(0)``).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    name = name or str(getattr(distance_fn, "__name__", "metric"))
    df = _normalise(judgments, audio_root)
    if df.empty:
        return AgreementResult(name=name, notes=["no judged pairs"])
    cache = cache if cache is not None else AudioCache()
    dist, notes = pair_distances(df, distance_fn, cache, progress=progress, desc=name)
    df = df.merge(dist, on=["ref_audio", "test_audio"], how="left")
    n_failed = int(dist["distance"].isna().sum())
    df = df[df["distance"].notna()].reset_index(drop=True)
    cond = (
        df.groupby(["reference", "family", "level"], dropna=False, sort=True)
        .agg(n=("label", "size"), p_different=("label", "mean"), distance=("distance", "mean"))
        .reset_index()
    )
    res = score_distances(
        df["distance"].to_numpy(),
        df["label"].to_numpy(),
        df["reference"].to_numpy(),
        cond,
        n_folds=n_folds,
        rng=rng,
        name=name,
        notes=notes,
    )
    res.n_pairs = int(len(dist) - n_failed)
    res.n_failed_pairs = n_failed
    res.pairs = dist
    return res


def agreement_table(results: list[AgreementResult]) -> pd.DataFrame:
    return pd.DataFrame([r.as_row() for r in results])


def plot_calibration(results: list[AgreementResult], out_png) -> None:
    """Held-out predicted vs observed P(different), one small panel per metric
    (reliability diagrams side by side, shared axes), PNG + PDF."""
    from .figures import pyplot, save

    plt = pyplot()
    usable = [r for r in results if len(r.calibration)]
    n = max(1, len(usable))
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3.3 * ncol, 3.3 * nrow + 0.4), squeeze=False, sharex=True, sharey=True
    )
    for ax, r in zip(axes.ravel(), usable):
        c = r.calibration
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
        ax.plot(c["predicted"], c["observed"], marker="o", ms=4, lw=1.5, color="tab:blue")
        ax.set_title(f"{r.name}\nAUC {r.roc_auc:.2f}, Brier {r.brier:.3f}", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
    for ax in axes.ravel()[len(usable) :]:
        ax.set_visible(False)
    fig.supxlabel("predicted P(different) (held-out logistic on the distance)")
    fig.supylabel("observed P(different)")
    fig.tight_layout()
    save(fig, out_png)
