"""Write OUT/index.html: one page linking every artefact of scripts/pipeline.sh.

Usage: python scripts/pipeline_page.py --out out/pipeline --timings out/pipeline/timings.tsv [--total-s S]
Self-contained HTML, relative links, nothing fetched from the network. The page is the
Jinja2 template ``analysis/templates/pipeline.html`` (``analysis.rendering``, autoescaped);
this script only gathers what it shows.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from analysis.rendering import render  # jndlab is installed in the .venv (scripts/setup.sh)
from perturbations.files import atomic_write_text

SECTIONS = [
    ("Stimuli", "stimuli", ["manifest.csv"], "python -m perturbations generate"),
    (
        "Listening test",
        ".",
        ["jndlab.sqlite", "server.log"],
        "python -m listening_test db upgrade / experiment create / serve",
    ),
    (
        "Simulated crowd",
        "simulation",
        ["summary.json", "truth.json", "answers.jsonl", "triplets.txt"],
        "python -m listening_test simulate",
    ),
    ("Analysis report", "report", None, "python -m model report (python -m analysis report + learned metrics)"),
    ("Metric", "model", None, "python -m model train"),
    ("Speech enhancement", "se", None, "python -m se train --init dpam-se / se evaluate"),
]
MAX_LISTED = 40


def _size(path: Path) -> str:
    n = path.stat().st_size
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _files(out: Path, folder: str, names: list[str] | None) -> list[Path]:
    base = out / folder
    if not base.exists():
        return []
    if names is not None:
        return [base / n for n in names if (base / n).is_file()]
    # A folder written by another package: its HTML pages first, then images and tables.
    files = [p for p in sorted(base.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    rank = {".html": 0, ".png": 1, ".svg": 1, ".csv": 2, ".tsv": 2, ".json": 3, ".txt": 3, ".pt": 4, ".wav": 5}
    return sorted(files, key=lambda p: (rank.get(p.suffix, 6), str(p)))


def _simulation(out: Path) -> dict | None:
    """The simulated crowd's summary.json, as the template shows it (None when absent)."""
    path = out / "simulation" / "summary.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    kinds = [
        {
            "kind": k,
            "participants": r["participants"],
            "complete": r["complete"],
            "screened_out": r["screened_out"],
            "judgments": r["judgments"],
            "catch_accuracy": "" if r.get("catch_accuracy") is None else f"{r['catch_accuracy']:.2f}",
        }
        for k, r in s.get("per_kind", {}).items()
    ]
    truth = [
        {"family": f, "pooled": t["pooled_midpoint_level"], "median": t["median_level_jnd"], "tracks": t["n_tracks"]}
        for f, t in sorted((s.get("truth_families") or {}).items())
        if isinstance(t.get("pooled_midpoint_level"), (int, float))
        and isinstance(t.get("median_level_jnd"), (int, float))
    ]
    return {
        "participants": s["participants"],
        "complete": s["complete"],
        "screened_out": s["screened_out"],
        "judgments": s["judgments"],
        "seconds": s["seconds"],
        "errors": s["errors"],
        "violations": len(s.get("contract_violations", [])),
        "kinds": kinds,
        "truth": truth,
    }


SE_EVALUATIONS = (("se/evaluation", "fine-tuned (se/last.pt)"), ("se/evaluation_published", "published dpam-se"))
SE_LABELS = {"pesq": "PESQ (wb)", "stoi": "STOI", "si_sdr_db": "SI-SDR (dB)", "metric": "learned metric distance"}


def _worse(summary: dict) -> list[str]:
    """Measures on which the enhanced mean is worse than the noisy input's: ``se evaluate``'s rule,
    for summaries written before it recorded ``worse_than_input``."""
    from se.evaluate import worse_than_input

    return worse_than_input(summary)


def _evaluations(out: Path) -> list[dict]:
    """Noisy input vs each evaluated enhancer; any system worse than its own input is flagged."""
    found = []
    for folder, label in SE_EVALUATIONS:
        path = out / folder / "summary.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        summary = result.get("summary", {})
        worse = result.get("worse_than_input", _worse(summary))
        rows = [
            {
                "measure": SE_LABELS.get(k, k),
                "noisy": _num(e["noisy"]["mean"]),
                "enhanced": _num(e["enhanced"]["mean"]),
                "change": _num(e.get("improvement_mean")),
                "better": e.get("better", ""),
                "worse": k in worse,
            }
            for k, e in summary.items()
        ]
        found.append(
            {
                "label": label,
                "files": result.get("files", "?"),
                "worse": [SE_LABELS.get(k, k) for k in worse],
                "rows": rows,
            }
        )
    return found


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def build(out: Path, timings: Path, total_s: float | None) -> Path:
    """Write ``out``/index.html from what the pipeline left in ``out`` and the step timings
    (a TSV of step, what, status, seconds); returns its path. Raises OSError when it cannot
    be written, json.JSONDecodeError for a summary.json that is not JSON."""
    steps = []
    if timings.is_file():
        with timings.open() as handle:
            steps = list(csv.reader(handle, delimiter="\t"))
    sections = []
    for title, folder, names, command in SECTIONS:
        files = _files(out, folder, names)
        sections.append(
            {
                "title": title,
                "command": command,
                "folder": folder,
                "simulation": _simulation(out) if title == "Simulated crowd" else None,
                "evaluations": _evaluations(out) if title == "Speech enhancement" else [],
                "files": [{"href": os.path.relpath(f, out), "size": _size(f)} for f in files[:MAX_LISTED]],
                "more": max(len(files) - MAX_LISTED, 0),
            }
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = render("pipeline.html", stamp=stamp, steps=steps, total_s=total_s, sections=sections)
    return atomic_write_text(out / "index.html", page)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--timings", type=Path, default=None)
    p.add_argument("--total-s", type=float, default=None)
    args = p.parse_args(argv)
    if not args.out.is_dir():
        print(f"pipeline_page: {args.out} is not a folder", file=sys.stderr)
        return 1
    path = build(args.out, args.timings or args.out / "timings.tsv", args.total_s)
    print(f"summary page: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
