"""Evaluate an enhancer on a held-out set: PESQ (wb), STOI, SI-SDR and the learned metric.

``evaluate(checkpoint, data_dir, out_dir)`` enhances every noisy file of the set (writing
``OUT/enhanced/``, which an A/B listening test can use), scores noisy and enhanced
against clean, and writes:

- ``per_file.csv``: one row per file (with the set's SNR and noise type when it has a
  ``heldout.csv``);
- ``summary.md`` and ``summary.json``: mean, standard deviation and n of each measure
  for the noisy input and the enhanced output, and the mean improvement;
- ``worse_than_input`` (summary.json) and a warning at the top of summary.md: every
  measure on which the enhanced output scores worse than its own noisy input, on the
  mean over files (a system that makes audio worse is not called an improvement).

PESQ/STOI/SI-SDR run in a process pool (``workers``; 0 = in this process), started
with "spawn" so the workers hold no copy of torch's threads. The learned metric runs
here, batched on the model's device.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from perturbations.files import atomic_path

log = logging.getLogger("se.evaluate")
MEASURES = (
    ("pesq", "PESQ (wb, MOS-LQO)", "higher"),
    ("stoi", "STOI", "higher"),
    ("si_sdr_db", "SI-SDR (dB)", "higher"),
    ("metric", "learned metric distance", "lower"),
)


def _summary(rows: list[dict[str, Any]], has_metric: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, _, better in MEASURES:
        if key == "metric" and not has_metric:
            continue
        entry: dict[str, Any] = {"better": better}
        for condition in ("noisy", "enhanced"):
            values = np.array([r[f"{key}_{condition}"] for r in rows], dtype=float)
            values = values[np.isfinite(values)]
            entry[condition] = {
                "mean": float(values.mean()) if len(values) else None,
                "std": float(values.std(ddof=1)) if len(values) > 1 else None,
                "n": int(len(values)),
            }
        deltas = np.array([r[f"{key}_enhanced"] - r[f"{key}_noisy"] for r in rows], dtype=float)
        deltas = deltas[np.isfinite(deltas)]
        entry["improvement_mean"] = float(deltas.mean()) if len(deltas) else None
        out[key] = entry
    return out


# a mean change smaller than this (in the measure's unit) is float rounding, not an effect: an
# identity network must not be called worse than its input because PESQ moved by 1e-6
WORSE_TOLERANCE = {"pesq": 1e-3, "stoi": 1e-4, "si_sdr_db": 1e-3, "metric": 1e-4}


def worse_than_input(summary: dict[str, Any]) -> list[str]:
    """Measures (keys of ``summary``) whose mean enhanced score is worse than the mean noisy score
    by more than ``WORSE_TOLERANCE`` (1e-4 for measures not listed there)."""
    worse = []
    for key, entry in summary.items():
        change = entry.get("improvement_mean")
        if change is None:
            continue
        tolerance = WORSE_TOLERANCE.get(key, 1e-4)
        if (entry["better"] == "higher" and change < -tolerance) or (entry["better"] == "lower" and change > tolerance):
            worse.append(key)
    return worse


def worse_warning(worse: list[str], files: int) -> str:
    """One line naming the measures a system made worse ('' when none)."""
    if not worse:
        return ""
    labels = {key: label for key, label, _ in MEASURES}
    return (
        f"WORSE THAN ITS INPUT: the enhanced audio scores worse than the noisy input on "
        f"{', '.join(labels.get(k, k) for k in worse)} (mean over {files} files)"
    )


def _markdown(summary: dict[str, Any], header: str) -> str:
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    files = max((e["enhanced"]["n"] for e in summary.values()), default=0)
    warning = worse_warning(worse_than_input(summary), files)
    lines = [
        header,
        "",
        *([f"**{warning}.**", ""] if warning else []),
        "| measure | noisy | enhanced | mean change | better | n |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, _ in MEASURES:
        if key not in summary:
            continue
        e = summary[key]
        noisy, enh = e["noisy"], e["enhanced"]
        lines.append(
            f"| {label} | {fmt(noisy['mean'])} ± {fmt(noisy['std'])} | {fmt(enh['mean'])} ± {fmt(enh['std'])} "
            f"| {fmt(e['improvement_mean'])} | {e['better']} | {enh['n']} |"
        )
    lines.append("")
    lines.append("Values are mean ± standard deviation over files.")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def _metric_distance(metric, clean: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    device = next(metric.parameters()).device
    rate = None if sample_rate == metric.sample_rate else sample_rate
    return float(metric(torch.from_numpy(clean).to(device), torch.from_numpy(est).to(device), sample_rate=rate))


def evaluate(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metric_checkpoint: str | os.PathLike | None = None,
    workers: int = 2,
    chunk_s: float | str | None = "auto",
    progress: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    from se.checkpoint import read_checkpoint
    from se.data import check_heldout, find_pair_dirs, match_pairs, read_heldout_csv
    from se.enhance import Enhancer, prevent_clipping, read_any, write_like

    out = Path(out_dir)
    payload = read_checkpoint(checkpoint)
    noisy_dir, clean_dir = find_pair_dirs(data_dir, "test")
    pairs = match_pairs(noisy_dir, clean_dir)
    changed = check_heldout(data_dir)
    if changed:
        raise ValueError(
            f"{data_dir}: {len(changed)} file(s) differ from heldout.csv (e.g. {changed[0]}); "
            "regenerate the held-out set"
        )
    meta = read_heldout_csv(data_dir)
    enhancer = Enhancer.from_checkpoint(checkpoint, device=device, chunk_s=chunk_s)
    metric, metric_note = None, None
    if metric_checkpoint is not None:
        from model import load_metric

        metric = load_metric(metric_checkpoint, device=enhancer.device)
        metric_note = f"{metric.trained_on}: {metric.perceptual_validity}"

    rows: dict[str, dict[str, Any]] = {}
    jobs = []
    for pair in tqdm(pairs, desc="enhance", unit="file", disable=not progress):
        noisy, rate, info = read_any(pair.noisy)
        clean, clean_rate, _ = read_any(pair.clean)
        if noisy.ndim != 1 or clean.ndim != 1:
            raise ValueError(f"{pair.noisy}: evaluation expects mono files")
        enhanced, gain_db = prevent_clipping(enhancer.enhance(noisy, rate))
        write_like(out / "enhanced" / pair.name, enhanced, rate, info)
        row: dict[str, Any] = {
            "file": pair.name,
            "sample_rate": rate,
            "seconds": len(noisy) / rate,
            "snr_db": meta.get(pair.name, {}).get("snr_db", ""),
            "noise_type": meta.get(pair.name, {}).get("noise_type", ""),
            "output_gain_db": gain_db,
        }
        if metric is not None:
            row["metric_noisy"] = _metric_distance(metric, clean, noisy, rate)
            row["metric_enhanced"] = _metric_distance(metric, clean, enhanced, rate)
        rows[pair.name] = row
        jobs.append((pair.name, clean, noisy, enhanced, rate))

    from se.scores import score_pair

    if workers > 0:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            results = list(
                tqdm(pool.map(score_pair, jobs), total=len(jobs), desc="score", unit="file", disable=not progress)
            )
    else:
        results = [score_pair(job) for job in tqdm(jobs, desc="score", unit="file", disable=not progress)]
    for name, scores in results:
        rows[name].update(scores)

    ordered = [rows[p.name] for p in pairs]
    columns = list(ordered[0].keys())
    with atomic_path(out / "per_file.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in ordered:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    summary = _summary(ordered, metric is not None)
    from se.checkpoint import resolve_checkpoint

    result = {
        "checkpoint": str(resolve_checkpoint(checkpoint).resolve()),
        "data": str(Path(data_dir).resolve()),
        "files": len(ordered),
        "loss_spec": payload.get("loss_spec"),
        # a shipped metric's name ("dpam") stays a name; a path is made absolute
        "metric_checkpoint": (
            str(Path(metric_checkpoint).resolve()) if Path(metric_checkpoint).exists() else str(metric_checkpoint)
        )
        if metric_checkpoint
        else None,
        "metric_note": metric_note,
        "summary": summary,
        "worse_than_input": worse_than_input(summary),
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, allow_nan=False))
    header = (
        f"# Enhancement on {Path(data_dir).name} ({len(ordered)} files)\n\n"
        f"checkpoint `{Path(checkpoint).name}` (network {payload.get('network')}, loss {payload.get('loss_spec')})"
        + (f"; metric note: {metric_note}" if metric_note else "")
    )
    with atomic_path(out / "summary.md") as tmp:
        tmp.write_text(_markdown(summary, header))
    return result
