"""``python -m analysis report``: one self-contained HTML page plus CSV tables.

Layout of OUT/: index.html (rendered from the Jinja2 template
``analysis/report_template.html``; PNG plots embedded as base64, no external
CSS/JS; the same PNGs and a PDF of each sit beside it; the page fits a 1280 px
window: tables scroll inside their box, figures scale down), judgments.csv, screening.csv, jnd_by_family.csv,
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
from markupsafe import Markup

from .judgments import load_judgments, pairs_table, write_tidy_csv
from .formatting import format_number, format_p
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


TEXT_COLUMNS = {"reason", "notes", "reasons", "jnd_text", "jnd_physical_text", "worker", "family", "reference",
                "metric", "physical_param", "group", "dataset"}


def _img(path: Path, alt: str, href: str | None = None, wide: bool = False) -> Markup:
    """A figure with the PNG embedded (self-contained page) and links to the PNG and PDF."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    href = href or path.name
    links = [f'<a href="{html.escape(href)}">PNG</a>']
    if path.with_suffix(".pdf").is_file():
        links.append(f'<a href="{html.escape(href[:-4] + ".pdf")}">PDF</a>')
    return Markup(f'<figure{" class=wide" if wide else ""}><img alt="{html.escape(alt)}" '
                  f'src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)} ({", ".join(links)})'
                  f'</figcaption></figure>')


def _fmt(v, column: str = "") -> str:
    """A table cell: readable numbers (no 4.158e-07, no raw infinities), yes/no."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        if column.endswith(("pvalue", "_p")):
            return format_p(float(v))
        if math.isinf(v):
            return "open" if column.endswith(("_low", "_high")) else ("∞" if v > 0 else "−∞")
        if column.endswith(("_rate", "accuracy", "fraction", "_frac")) and 0.0 <= v <= 1.0:
            return f"{v:.3f}"   # rates side by side in fixed decimals; a 1e-8 lapse is 0.000
        return format_number(float(v))
    if v is None or v is pd.NA:
        return ""
    return str(v)


def _table(df: pd.DataFrame, columns: list[str] | None = None, max_rows: int = 200) -> Markup:
    if df is None or df.empty:
        return Markup("<p class=note>(empty)</p>")
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]

    def cls(c):
        return ' class="text"' if c in TEXT_COLUMNS else ""

    head = "".join(f"<th{cls(c)}>{html.escape(c.replace('_', ' '))}</th>" for c in cols)
    body = []
    for row in df[cols].head(max_rows).itertuples(index=False, name=None):
        body.append("<tr>" + "".join(f"<td{cls(c)}>{html.escape(_fmt(v, c))}</td>" for c, v in zip(cols, row))
                    + "</tr>")
    more = f"<p class=note>{len(df) - max_rows} more rows in the CSV.</p>" if len(df) > max_rows else ""
    return Markup(f"<div class=scroll><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
                  f"</table></div>{more}")


def plot_over_time(judgments: pd.DataFrame, out_png: Path) -> None:
    from .figures import pyplot, save

    plt = pyplot()
    t = pd.to_datetime(judgments["answered_at"], utc=True, errors="coerce")
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for kind, g in judgments.assign(_t=t).dropna(subset=["_t"]).groupby("kind", sort=True):
        times = g["_t"].sort_values()
        ax.step(times.dt.tz_localize(None), np.arange(1, len(times) + 1), where="post", label=kind)
    ax.set_ylabel("cumulative judgments")
    ax.set_xlabel("answered at (UTC)")
    ax.legend(fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    save(fig, out_png)


def section(title: str, *, note: str = "", figures=(), blocks=(), warnings=(), level: int = 2) -> dict:
    """One report section for the template: title, note, figures, blocks (Markup), warnings."""
    return {"title": title, "note": note, "figures": list(figures), "blocks": list(blocks),
            "warnings": list(warnings), "level": level}


def render_page(title: str, subtitle: str, sections: list[dict], warnings: list[str], csvs: list[str]) -> str:
    """The report page from ``analysis/report_template.html`` (Jinja2, autoescaped;
    figures and tables arrive as Markup built by ``_img``/``_table``)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent)),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report_template.html").render(
        title=title, subtitle=subtitle, sections=sections, warnings=warnings, csvs=csvs)


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
    sections: list[dict] = []
    warnings_: list[str] = []
    write_tidy_csv(judgments, out / "judgments.csv")

    # --- screening
    screened = screen(judgments, opts.rules)
    screened.to_csv(out / "screening.csv", index=False, lineterminator="\n")
    kept = included_judgments(judgments, opts.rules, screened)
    n_ex = int(screened["excluded"].sum())
    sections.append(section(
        "Worker screening",
        note=f"{len(screened)} workers, {n_ex} excluded; rules: {opts.rules.to_dict()}. "
             f"{len(kept)} of {len(judgments)} judgments kept.",
        blocks=[_table(screened, ["worker", "excluded", "reasons", "n_main", "n_catch", "catch_accuracy",
                                  "false_alarm_rate", "lapse_rate", "headphone_passed", "median_rt_ms",
                                  "underplayed_fraction", "notes"])]))

    # --- JNDs
    main = kept[(kept["kind"] == "main") & kept["response_different"].notna()]
    n_main_all = int((judgments["kind"] == "main").sum())
    if main.empty:
        msg = (f"no main-trial judgments from included workers ({n_main_all} main trials in the database, "
               f"{len(judgments)} judgments of any kind): no JND fits and no metric agreement")
        warnings_.append(msg)
        sections.append(section("JNDs", warnings=[msg]))
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
            figs.append(_img(png, f"psychometric curve: {family}"))
        plot_jnd_distribution(tables["by_participant"], out / "jnd_distribution.png")
        cols = ["family", "estimable", "jnd_text", "physical_param", "jnd_physical_text", "n_trials",
                "n_participants", "n_identical", "identical_fa_rate", "guess_rate", "lapse_rate", "reason", "notes"]
        sections.append(section(
            "Psychometric curves per family (pooled)",
            note="Logistic in level with the guess rate from identical pairs and a fitted lapse rate; JND = level "
                 "where P(different) is halfway between the guess rate and 1 − lapse. Intervals are 95% profile "
                 "likelihood; '< x' / '> x' mark an end the data cannot close inside the tested range; separated "
                 "data are reported as the bracket between two tested levels. Physical units on the top axis.",
            figures=figs, blocks=[_table(tables["by_family"], cols)]))
        sections.append(section("JND distributions across participants",
                                figures=[_img(out / "jnd_distribution.png", "JND per participant")]))
        sections.append(section("Per reference", level=3,
                                blocks=[_table(tables["by_reference"], ["family", "reference"] + cols[1:])]))
        sections.append(section("Per participant", level=3,
                                blocks=[_table(tables["by_participant"], ["family", "worker"] + cols[1:])]))

        # --- agreement
        pairs = pairs_table(kept, kinds=("main",))
        fns, skipped = make_baselines(opts.baselines)
        for ckpt in opts.metrics:
            fn = learned_metric(ckpt)
            fns[f"learned:{Path(ckpt).name}"] = fn
        missing = [p for p in sorted(set(pairs["ref_audio"]) | set(pairs["test_audio"])) if not Path(p).is_file()]
        if not fns:
            sections.append(section("Metric agreement", note="no metrics requested"))
        elif missing:
            msg = f"{len(missing)} audio files are missing (first: {missing[0]}): metric agreement skipped"
            warnings_.append(msg)
            sections.append(section("Metric agreement", warnings=[msg]))
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
            sections.append(section(
                "Metric agreement",
                note="ROC-AUC of the distance for different/same answers; accuracy at the best threshold, chosen on "
                     f"training folds split by reference ({opts.n_folds}-fold); Spearman ρ with the observed "
                     "P(different) per (reference, family, level); calibration of a held-out logistic on the distance.",
                blocks=[_table(table, ["metric", "n_judgments", "n_pairs", "roc_auc", "cv_accuracy",
                                       "majority_accuracy", "spearman_rho", "spearman_p", "brier", "log_loss",
                                       "notes"])],
                figures=[_img(out / "calibration.png", "calibration per metric", wide=True)]))

    # --- over time
    plot_over_time(judgments, out / "judgments_over_time.png")
    sections.append(section("Judgments over time",
                            figures=[_img(out / "judgments_over_time.png", "judgments over time")]))

    # --- DPAM human data
    if opts.dpam_dir:
        sections.append(_dpam_section(Path(opts.dpam_dir), out, opts, warnings_))

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    csvs = sorted(p.name for p in out.glob("*.csv"))
    subtitle = (f"database {source}; generated {when}; {len(judgments)} judgments ({n_main_all} main) from "
                f"{judgments['worker'].nunique()} workers.")
    page = render_page("jndlab report", subtitle, sections, warnings_, csvs)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _dpam_section(dpam_dir: Path, out: Path, opts: ReportOptions, warnings_: list[str]) -> dict:
    from .dpam_human import run_dpam_jnd

    files = {k: dpam_dir / f"dataset_{k}.txt" for k in ("linear", "reverb", "eq", "combined")}
    present = {k: (p if p.is_file() else None) for k, p in files.items()}
    title = "DPAM human data (Manocha et al. 2020, CC-BY 4.0)"
    if not any(present.values()):
        msg = f"--dpam {dpam_dir}: none of dataset_linear/reverb/eq/combined.txt found; DPAM section skipped"
        warnings_.append(msg)
        return section(title, warnings=[msg])
    res = run_dpam_jnd(present["linear"], present["reverb"], out / "dpam", eq_path=present["eq"],
                       combined_path=present["combined"], n_boot=0, seed=opts.seed, show_progress=opts.progress)
    blocks, figs = [], []
    if "linear_jnd" in res:
        blocks.append(_table(res["linear_jnd"], ["family", "base_level", "estimable", "jnd_text", "n_trials",
                                                 "n_identical", "identical_fa_rate", "guess_rate", "lapse_rate",
                                                 "reason"]))
    for kind in ("reverb", "eq", "combined"):
        if f"{kind}_fits" in res:
            blocks.append(Markup(f"<h3>{kind}: JND as a distance between 0-100 level vectors</h3>"))
            blocks.append(_table(res[f"{kind}_fits"], ["base_level", "estimable", "jnd_text", "n_trials",
                                                       "n_identical", "identical_fa_rate", "reason"]))
    for png in sorted((out / "dpam").glob("dpam_*.png")):
        figs.append(_img(png, png.stem.replace("dpam_", "DPAM "), href=f"dpam/{png.name}"))
    if "false_alarms" in res:
        blocks.append(Markup("<h3>False alarms on identical pairs</h3>"))
        blocks.append(_table(res["false_alarms"]))
    missing = [f"dataset_{k}.txt" for k, p in present.items() if p is None]
    return section(title, note="JND = change from the base level at which the fit is halfway between the "
                   "false-alarm rate and 1 − lapse (95% profile-likelihood intervals); tables in dpam/."
                   + (f" Not found in {dpam_dir}: {', '.join(missing)}." if missing else ""),
                   figures=figs, blocks=blocks)
