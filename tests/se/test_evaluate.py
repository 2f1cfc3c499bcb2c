"""Evaluation on a held-out set: per-file CSV and summary tables."""

from __future__ import annotations

import csv
import json

import pytest

from se.data import NoiseSpec, split_clean_corpus, write_heldout
from se.evaluate import evaluate


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_evaluate_writes_tables(tmp_path, clean_corpus, make_checkpoint, metric_ckpt, workers):
    _, held, ids = split_clean_corpus(clean_corpus, 0.34, seed=0)
    write_heldout(held, ids, tmp_path / "heldout", NoiseSpec((0.0, 5.0)), 16000, seed=0)
    ckpt = make_checkpoint(tmp_path / "se.pt")
    result = evaluate(
        ckpt,
        tmp_path / "heldout",
        tmp_path / "eval",
        metric_checkpoint=metric_ckpt,
        workers=workers,
        progress=False,
        device="cpu",
    )
    assert result["files"] == 2
    with open(tmp_path / "eval" / "per_file.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and rows[0]["snr_db"] and rows[0]["noise_type"]
    for key in ("pesq", "stoi", "si_sdr_db", "metric"):
        assert f"{key}_noisy" in rows[0] and f"{key}_enhanced" in rows[0]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())["summary"]
    assert summary["si_sdr_db"]["noisy"]["n"] == 2 and summary["metric"]["better"] == "lower"
    assert "| SI-SDR (dB) |" in (tmp_path / "eval" / "summary.md").read_text()
    assert sorted(p.name for p in (tmp_path / "eval" / "enhanced").iterdir()) == sorted(f"{i}.wav" for i in ids)
