"""Objective scores of an estimate against its clean reference (numpy only, no torch).

Kept apart from ``se.evaluate`` so the process-pool workers import little: PESQ and
STOI are the slow part of evaluation and run in those workers.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly

PESQ_RATE = 16000  # wide-band PESQ (ITU-T P.862.2) is defined at 16 kHz


def si_sdr_db(clean: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR (Le Roux et al. 2019), in dB; means removed."""
    s = np.asarray(clean, np.float64) - np.mean(clean)
    e = np.asarray(estimate, np.float64) - np.mean(estimate)
    energy = float(np.dot(s, s))
    if energy <= 0:
        return math.nan
    target = (float(np.dot(e, s)) / energy) * s
    noise = e - target
    return 10.0 * math.log10(max(float(np.dot(target, target)), 1e-20) / max(float(np.dot(noise, noise)), 1e-20))


def pesq_wb(clean: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO); other rates are resampled to 16 kHz; NaN when PESQ refuses."""
    from pesq import pesq

    if sample_rate != PESQ_RATE:
        g = math.gcd(sample_rate, PESQ_RATE)
        clean = resample_poly(clean, PESQ_RATE // g, sample_rate // g)
        estimate = resample_poly(estimate, PESQ_RATE // g, sample_rate // g)
    try:
        return float(pesq(PESQ_RATE, np.asarray(clean, np.float64), np.asarray(estimate, np.float64), "wb"))
    except Exception:  # noqa: BLE001 - e.g. "no utterances detected" on silence: a missing score
        return math.nan


def stoi(clean: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    from pystoi import stoi as _stoi

    return float(_stoi(np.asarray(clean, np.float64), np.asarray(estimate, np.float64), sample_rate, extended=False))


def score_pair(job: tuple[str, np.ndarray, np.ndarray, np.ndarray, int]) -> tuple[str, dict[str, float]]:
    """``(name, clean, noisy, enhanced, rate)`` -> ``(name, {measure_condition: value})`` (pool worker)."""
    import warnings

    name, clean, noisy, enhanced, rate = job
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pystoi warns on clips shorter than its 30-frame window
        for condition, est in (("noisy", noisy), ("enhanced", enhanced)):
            out[f"pesq_{condition}"] = pesq_wb(clean, est, rate)
            out[f"stoi_{condition}"] = stoi(clean, est, rate)
            out[f"si_sdr_db_{condition}"] = si_sdr_db(clean, est)
    return name, out
