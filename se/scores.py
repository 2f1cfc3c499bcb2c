"""Objective scores of an estimate against its clean reference (numpy only, no torch).

The scores are ``analysis.baselines``' (``si_sdr_db``, ``pesq_wb``, ``stoi``: the one set
of PESQ/STOI/SI-SDR wrappers); this module holds what evaluation adds: a PESQ that PESQ
refuses is a missing score (NaN), and the pool worker. Kept apart from ``se.evaluate`` so
the process-pool workers import little: PESQ and STOI are the slow part of evaluation and
run in those workers.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from analysis.baselines import PESQ_RATE, pesq_wb, si_sdr_db, stoi

__all__ = ["PESQ_RATE", "score_pair", "si_sdr_db", "stoi"]


def _pesq_or_nan(clean: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """``analysis.baselines.pesq_wb`` of ``estimate`` (samples,) against ``clean`` (samples,)
    at ``sample_rate`` Hz, or NaN when PESQ refuses the signal (e.g. "no utterances
    detected" on silence). Raises ImportError without the ``pesq`` package."""
    try:
        return pesq_wb(clean, estimate, sample_rate)
    except ImportError:
        raise
    except Exception:  # noqa: BLE001 - the pesq package raises its own error types: a missing score
        return math.nan


def score_pair(job: tuple[str, np.ndarray, np.ndarray, np.ndarray, int]) -> tuple[str, dict[str, float]]:
    """``(name, clean, noisy, enhanced, rate)`` -> ``(name, {measure_condition: value})`` (pool worker).

    Clips are (samples,) at ``rate`` Hz; measures ``pesq`` (wide-band MOS-LQO, NaN when
    refused), ``stoi`` (0-1) and ``si_sdr_db`` (dB), each for ``noisy`` and ``enhanced``.
    Raises ValueError when a clip's length differs from the clean one's.
    """
    name, clean, noisy, enhanced, rate = job
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pystoi warns on clips shorter than its 30-frame window
        for condition, est in (("noisy", noisy), ("enhanced", enhanced)):
            out[f"pesq_{condition}"] = _pesq_or_nan(clean, est, rate)
            out[f"stoi_{condition}"] = stoi(clean, est, rate)
            out[f"si_sdr_db_{condition}"] = si_sdr_db(clean, est)
    return name, out
