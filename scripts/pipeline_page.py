"""Write OUT/index.html: one page linking every artefact of scripts/pipeline.sh.

Usage: python scripts/pipeline_page.py --out out/pipeline --timings out/pipeline/timings.tsv [--total-s S]
Self-contained HTML, relative links, nothing fetched from the network.
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

SECTIONS = [
    ("Stimuli", "stimuli", ["manifest.csv"], "python -m perturbations generate"),
    ("Listening test", ".", ["jndlab.sqlite", "server.log"], "python -m listening_test db upgrade / experiment create / serve"),
    ("Simulated crowd", "simulation", ["summary.json", "truth.json", "answers.jsonl", "triplets.txt"], "python -m listening_test simulate"),
    ("Analysis report", "report", None, "python -m analysis report"),
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


def _link(out: Path, path: Path) -> str:
    rel = os.path.relpath(path, out)
    return f'<a href="{html.escape(rel)}">{html.escape(rel)}</a> <small>({_size(path)})</small>'


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


def _simulation_table(out: Path) -> str:
    path = out / "simulation" / "summary.json"
    if not path.is_file():
        return ""
    s = json.loads(path.read_text())
    def accuracy(r):
        return "" if r.get("catch_accuracy") is None else f"{r['catch_accuracy']:.2f}"

    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{r['participants']}</td><td>{r['complete']}</td>"
        f"<td>{r['screened_out']}</td><td>{r['judgments']}</td><td>{accuracy(r)}</td></tr>"
        for k, r in s.get("per_kind", {}).items())
    truth = "".join(
        f"<tr><td>{html.escape(f)}</td><td>{t['pooled_midpoint_level']:.1f}</td><td>{t['median_level_jnd']:.1f}</td>"
        f"<td>{t['n_tracks']}</td></tr>"
        for f, t in sorted((s.get("truth_families") or {}).items())
        if isinstance(t.get("pooled_midpoint_level"), (int, float)) and isinstance(t.get("median_level_jnd"), (int, float)))
    return (f"<p>{s['participants']} participants, {s['complete']} complete, {s['screened_out']} screened out, "
            f"{s['judgments']} main-phase judgments in {s['seconds']:.0f} s; {s['errors']} errors, "
            f"{len(s.get('contract_violations', []))} contract violations.</p>"
            "<table><tr><th>worker kind</th><th>n</th><th>complete</th><th>screened out</th><th>judgments</th>"
            f"<th>catch accuracy</th></tr>{rows}</table>"
            + ("<p>Simulated truth (level units):</p><table><tr><th>family</th><th>pooled JND</th>"
               f"<th>median per-track JND</th><th>tracks</th></tr>{truth}</table>" if truth else ""))


SE_EVALUATIONS = (("se/evaluation", "fine-tuned (se/last.pt)"), ("se/evaluation_published", "published dpam-se"))
SE_LABELS = {"pesq": "PESQ (wb)", "stoi": "STOI", "si_sdr_db": "SI-SDR (dB)", "metric": "learned metric distance"}


def _worse(summary: dict) -> list[str]:
    """Measures on which the enhanced mean is worse than the noisy input's: ``se evaluate``'s rule,
    for summaries written before it recorded ``worse_than_input``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from se.evaluate import worse_than_input

    return worse_than_input(summary)


def _se_table(out: Path) -> str:
    """Noisy input vs each evaluated enhancer; any system worse than its own input is flagged."""
    parts = []
    for folder, label in SE_EVALUATIONS:
        path = out / folder / "summary.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        summary = result.get("summary", {})
        worse = result.get("worse_than_input", _worse(summary))
        rows = "".join(
            f"<tr><td>{html.escape(SE_LABELS.get(k, k))}</td><td>{_num(e['noisy']['mean'])}</td>"
            f"<td>{_num(e['enhanced']['mean'])}</td><td>{_num(e.get('improvement_mean'))}</td>"
            f"<td>{html.escape(e.get('better', ''))}</td>"
            f"<td>{'<strong class=worse>worse than input</strong>' if k in worse else 'ok'}</td></tr>"
            for k, e in summary.items())
        flag = (f"<p class=worse><strong>WORSE THAN ITS INPUT</strong> on "
                f"{html.escape(', '.join(SE_LABELS.get(k, k) for k in worse))}: this output is not an improvement."
                "</p>" if worse else "<p>Not worse than its input on any measure (means over files).</p>")
        parts.append(f"<h3>{html.escape(label)}: {result.get('files', '?')} held-out files</h3>{flag}"
                     "<table><tr><th>measure</th><th>noisy input</th><th>enhanced</th><th>mean change</th>"
                     f"<th>better</th><th></th></tr>{rows}</table>")
    return "".join(parts)


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def build(out: Path, timings: Path, total_s: float | None) -> Path:
    parts = []
    steps = []
    if timings.is_file():
        with timings.open() as handle:
            steps = list(csv.reader(handle, delimiter="\t"))
    if steps:
        rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td>"
                       f"<td>{html.escape(d)}</td></tr>" for a, b, c, d in steps)
        total = f"<p>Total: {total_s:.0f} s.</p>" if total_s is not None else ""
        parts.append("<h2>Steps</h2><table><tr><th>step</th><th>what</th><th>status</th><th>seconds</th></tr>"
                     f"{rows}</table>{total}")
    for title, folder, names, command in SECTIONS:
        files = _files(out, folder, names)
        body = f"<p><code>{html.escape(command)}</code></p>"
        if title == "Simulated crowd":
            body += _simulation_table(out)
        if title == "Speech enhancement":
            body += _se_table(out)
        if files:
            items = "".join(f"<li>{_link(out, f)}</li>" for f in files[:MAX_LISTED])
            more = f"<li>… and {len(files) - MAX_LISTED} more files in {html.escape(folder)}/</li>" if len(files) > MAX_LISTED else ""
            body += f"<ul>{items}{more}</ul>"
        else:
            body += "<p><em>not produced (step skipped or not built yet)</em></p>"
        parts.append(f"<h2>{html.escape(title)}</h2>{body}")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>jndlab pipeline</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}}
table{{border-collapse:collapse;margin:.5rem 0}}td,th{{border:1px solid #ccc;padding:.2rem .6rem;text-align:left}}
code{{background:#f3f3f3;padding:0 .2rem}}small{{color:#666}}.worse{{color:#b00020}}</style></head>
<body><h1>jndlab pipeline</h1><p>Written {stamp} by <code>scripts/pipeline.sh</code>.</p>
{''.join(parts)}
</body></html>
"""
    from perturbations.files import atomic_write_text  # installed in the .venv

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
