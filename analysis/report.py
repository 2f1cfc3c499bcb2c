"""``python -m analysis report``: one self-contained HTML page plus CSV tables.

Layout of OUT/: index.html (PNG plots embedded as base64, no external CSS/JS; the
same PNGs also sit beside it), judgments.csv, screening.csv, jnd_by_family.csv,
jnd_by_reference.csv, jnd_by_participant.csv, agreement.csv and, with DPAM data,
dpam/ (the tables of ``analysis.dpam_human``).
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .judgments import load_judgments, pairs_table, write_tidy_csv
from .screening import ScreeningRules, included_judgments, screen


@dataclass
class ReportOptions:
    rules: ScreeningRules = field(default_factory=ScreeningRules)
    baselines: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)   # learned checkpoints
    dpam_dir: str | None = None
    experiment: str | None = None
    n_boot: int = 500
    seed: int = 0
    n_folds: int = 5
    progress: bool = True


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>' \
           f'<a href="{html.escape(path.name)}">{html.escape(path.name)}</a></figcaption></figure>'


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:.4g}"
    if v is None or v is pd.NA:
        return ""
    return str(v)


def _table(df: pd.DataFrame, columns: list[str] | None = None, max_rows: int = 200) -> str:
    if df is None or df.empty:
        return "<p class=note>(empty)</p>"
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in df[cols].head(max_rows).itertuples(index=False, name=None):
        body.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
    more = f"<p class=note>{len(df) - max_rows} more rows in the CSV.</p>" if len(df) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def plot_over_time(judgments: pd.DataFrame, out_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = pd.to_datetime(judgments["answered_at"], utc=True, errors="coerce")
    fig, ax = plt.subplots(figsize=(6, 3))
    for kind, g in judgments.assign(_t=t).dropna(subset=["_t"]).groupby("kind", sort=True):
        times = g["_t"].sort_values()
        ax.step(times.dt.tz_localize(None), np.arange(1, len(times) + 1), where="post", label=kind)
    ax.set_ylabel("cumulative judgments")
    ax.set_xlabel("answered at (UTC)")
    ax.legend(fontsize=6)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:.5em}
img{max-width:520px}.note{color:#666;font-size:13px}.warn{color:#a40}h2{border-bottom:1px solid #ddd}"""


def build_report(url: str | None, out_dir, options: ReportOptions | None = None) -> Path:
    """Analyse the database at ``url`` and write the report into ``out_dir``; returns index.html."""
    from tqdm import tqdm

    from .agreement import AudioCache, agreement, agreement_table, plot_calibration
    from .baselines import learned_metric, make_baselines
    from .jnd import jnd_tables, n_fit_units, plot_family_curve, plot_jnd_distribution

    opts = options or ReportOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(opts.seed)
    judgments = load_judgments(url, experiment=opts.experiment)
    source = judgments.attrs.get("database_url", str(url))
    if judgments.empty:
        raise ValueError(f"{source}: the database holds no judgments yet (no answered trials)")
    sections: list[str] = []
    warnings_: list[str] = []
    write_tidy_csv(judgments, out / "judgments.csv")

    # --- screening
    screened = screen(judgments, opts.rules)
    screened.to_csv(out / "screening.csv", index=False, lineterminator="\n")
    kept = included_judgments(judgments, opts.rules, screened)
    n_ex = int(screened["excluded"].sum())
    sections.append(
        f"<h2>Worker screening</h2><p>{len(screened)} workers, {n_ex} excluded; rules: "
        f"<code>{html.escape(str(opts.rules.to_dict()))}</code>. {len(kept)} of {len(judgments)} judgments kept.</p>"
        + _table(screened, ["worker", "excluded", "reasons", "n_main", "n_catch", "catch_accuracy",
                            "false_alarm_rate", "lapse_rate", "headphone_passed", "median_rt_ms",
                            "underplayed_fraction", "notes"]))

    # --- JNDs
    main = kept[(kept["kind"] == "main") & kept["response_different"].notna()]
    n_main_all = int((judgments["kind"] == "main").sum())
    if main.empty:
        msg = (f"no main-trial judgments from included workers ({n_main_all} main trials in the database, "
               f"{len(judgments)} judgments of any kind): no JND fits and no metric agreement")
        warnings_.append(msg)
        sections.append(f"<h2>JNDs</h2><p class=warn>{html.escape(msg)}</p>")
    else:
        with tqdm(total=n_fit_units(main), desc="psychometric fits", disable=not opts.progress) as bar:
            tables = jnd_tables(kept, n_boot=opts.n_boot, rng=rng, progress=bar.update)
        for key, name in (("by_family", "jnd_by_family.csv"), ("by_reference", "jnd_by_reference.csv"),
                          ("by_participant", "jnd_by_participant.csv")):
            tables[key].to_csv(out / name, index=False, lineterminator="\n")
        figs = []
        for family, (fit, trials, catch) in tables["fits"].items():
            png = out / f"psychometric_{family}.png"
            plot_family_curve(family, fit, trials, catch, tables["scales"][family], png)
            figs.append(_img(png, f"psychometric curve {family}"))
        plot_jnd_distribution(tables["by_participant"], out / "jnd_distribution.png")
        cols = ["family", "estimable", "reason", "n_trials", "n_participants", "jnd_level", "jnd_level_ci_low",
                "jnd_level_ci_high", "physical_param", "jnd_physical", "jnd_physical_ci_low", "jnd_physical_ci_high",
                "guess_rate", "lapse_rate", "notes"]
        sections.append(
            "<h2>Psychometric curves per family (pooled)</h2><p class=note>Logistic in level with guess rate from "
            "identical pairs and fitted lapse; JND = level where P(different) is halfway between the guess rate and "
            f"1 − lapse; 95% nonparametric bootstrap CI ({opts.n_boot} replicates).</p>" + "".join(figs)
            + _table(tables["by_family"], cols)
            + "<h2>JND distributions across participants</h2>" + _img(out / "jnd_distribution.png", "JND distribution")
            + "<h3>Per reference</h3>" + _table(tables["by_reference"], ["family", "reference"] + cols[1:])
            + "<h3>Per participant</h3>" + _table(tables["by_participant"], ["family", "worker"] + cols[1:]))

        # --- agreement
        pairs = pairs_table(kept, kinds=("main",))
        fns, skipped = make_baselines(opts.baselines)
        for ckpt in opts.metrics:
            fn = learned_metric(ckpt)
            fns[f"learned:{Path(ckpt).name}"] = fn
        missing = [p for p in sorted(set(pairs["ref_audio"]) | set(pairs["test_audio"])) if not Path(p).is_file()]
        if not fns:
            sections.append("<h2>Metric agreement</h2><p class=note>no metrics requested</p>")
        elif missing:
            msg = f"{len(missing)} audio files are missing (first: {missing[0]}): metric agreement skipped"
            warnings_.append(msg)
            sections.append(f"<h2>Metric agreement</h2><p class=warn>{html.escape(msg)}</p>")
        else:
            cache = AudioCache()
            results = []
            for name, fn in tqdm(list(fns.items()), desc="metric agreement", disable=not opts.progress):
                results.append(agreement(pairs, fn, n_folds=opts.n_folds, rng=np.random.default_rng(opts.seed),
                                         name=name, cache=cache))
            table = agreement_table(results)
            for name, note in skipped.items():
                table = pd.concat([table, pd.DataFrame([{"metric": name, "notes": f"skipped: {note}"}])],
                                  ignore_index=True)
            table.to_csv(out / "agreement.csv", index=False, lineterminator="\n")
            plot_calibration(results, out / "calibration.png")
            sections.append(
                "<h2>Metric agreement</h2><p class=note>ROC-AUC of the distance for different/same answers; "
                f"accuracy at the best threshold, chosen on training folds split by reference ({opts.n_folds}-fold); "
                "Spearman ρ with the observed P(different) per (reference, family, level); calibration of a "
                "held-out logistic on the distance.</p>"
                + _table(table, ["metric", "n_judgments", "n_pairs", "roc_auc", "cv_accuracy", "majority_accuracy",
                                 "spearman_rho", "spearman_p", "brier", "log_loss", "notes"])
                + _img(out / "calibration.png", "calibration"))

    # --- over time
    plot_over_time(judgments, out / "judgments_over_time.png")
    sections.append("<h2>Judgments over time</h2>" + _img(out / "judgments_over_time.png", "judgments over time"))

    # --- DPAM human data
    if opts.dpam_dir:
        sections.append(_dpam_section(Path(opts.dpam_dir), out, opts, warnings_))

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    csvs = sorted(p.name for p in out.glob("*.csv"))
    head = (f"<h1>jndlab report</h1><p class=note>database {html.escape(source)}; generated {when}; "
            f"{len(judgments)} judgments ({n_main_all} main) from {judgments['worker'].nunique()} workers. Tables: "
            + ", ".join(f'<a href="{c}">{c}</a>' for c in csvs) + "</p>"
            + "".join(f"<p class=warn>{html.escape(w)}</p>" for w in warnings_))
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>jndlab report</title><style>{CSS}</style>"
            f"</head><body>{head}{''.join(sections)}</body></html>\n")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _dpam_section(dpam_dir: Path, out: Path, opts: ReportOptions, warnings_: list[str]) -> str:
    from .dpam_human import format_jnd_table, run_dpam_jnd

    linear, reverb = dpam_dir / "dataset_linear.txt", dpam_dir / "dataset_reverb.txt"
    if not linear.is_file() and not reverb.is_file():
        msg = f"--dpam {dpam_dir}: neither dataset_linear.txt nor dataset_reverb.txt found; DPAM section skipped"
        warnings_.append(msg)
        return f"<h2>DPAM human data</h2><p class=warn>{html.escape(msg)}</p>"
    res = run_dpam_jnd(linear if linear.is_file() else None, reverb if reverb.is_file() else None, out / "dpam",
                       n_boot=opts.n_boot, seed=opts.seed, show_progress=opts.progress)
    parts = ["<h2>DPAM human data (Manocha et al. 2020, CC-BY 4.0)</h2><p class=note>JND = change from the base "
             "level at which the fit is halfway between the false-alarm rate and 1 − lapse; tables in dpam/.</p>"]
    if "linear_jnd" in res:
        parts.append("<pre>" + html.escape(format_jnd_table(res["linear_jnd"])) + "</pre>")
        for png in sorted((out / "dpam").glob("dpam_*.png")):
            parts.append(_img(png, png.stem).replace(f'href="{png.name}"', f'href="dpam/{png.name}"'))
    if "false_alarms" in res:
        parts.append("<h3>False alarms on identical pairs</h3>" + _table(res["false_alarms"]))
    return "".join(parts)
