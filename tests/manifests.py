"""Tiny stimulus sets for tests: write clips and a manifest.csv (DESIGN.md columns) beside them."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import soundfile as sf


def generate_stimuli(clean: Path, out: Path, families: str, levels: str, *options: str) -> Path:
    """Runs ``python -m perturbations generate --input CLEAN --output OUT --families FAMILIES
    --levels LEVELS --no-progress OPTIONS...`` from the repository root; returns OUT/manifest.csv.

    Raises:
        subprocess.CalledProcessError: the command failed (its output is on the error).
    """
    import subprocess
    import sys

    command = ["--input", str(clean), "--output", str(out), "--families", families, "--levels", levels]
    subprocess.run(
        [sys.executable, "-m", "perturbations", "generate", *command, "--no-progress", *options],
        check=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return Path(out) / "manifest.csv"


class ManifestWriter:
    """``add`` a clip per row (written as float WAV under ``audio/``), then ``write`` manifest.csv."""

    def __init__(self, folder: Path, sample_rate: int = 16000):
        self.folder, self.sample_rate, self.rows = Path(folder), sample_rate, []

    def add(
        self,
        stimulus_id: str,
        reference: str,
        family: str,
        level: float,
        audio: np.ndarray,
        params: dict | None = None,
        seed: int | str = 1,
    ) -> None:
        rel = f"audio/{stimulus_id}.wav"
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.asarray(audio, dtype=np.float32), self.sample_rate, subtype="FLOAT")
        self.rows.append(
            {
                "stimulus_id": stimulus_id,
                "reference": reference,
                "path": rel,
                "family": family,
                "level": level,
                "params": json.dumps(params or {}, sort_keys=True),
                "seed": seed,
                "sample_rate": self.sample_rate,
                "num_samples": len(audio),
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        )

    def write(self) -> Path:
        manifest = self.folder / "manifest.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        return manifest
