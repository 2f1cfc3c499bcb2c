"""``python -m analysis report``: one self-contained HTML page plus CSV tables.

Layout of OUT/: index.html (rendered from the Jinja2 template ``analysis/templates/report.html``
by ``analysis.rendering``; PNG plots embedded as base64, no external CSS/JS; the same PNGs and a
PDF of each sit beside it; the page fits a 1280 px window: tables scroll inside their box,
figures scale down), judgments.csv, screening.csv, jnd_by_family.csv, jnd_by_reference.csv,
jnd_by_participant.csv, agreement.csv and, with DPAM data, dpam/ (the tables of
``analysis.dpam_human``).

Learned metrics are scored as callables passed in (``ReportOptions.metrics``): analysis does
not load model checkpoints. ``python -m model report`` is this command with ``--metric``,
which builds them with ``model.score.learned_distance``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from perturbations.files import atomic_write_text

from .baselines import DistanceFn, parse_names
from .judgments import load_judgments, pairs_table, write_tidy_csv
from .rendering import figure, heading, render_page, section, table
from .screening import ScreeningRules, add_rule_arguments, included_judgments, rules_from_args, screen

__all__ = [
    "ReportOptions",
    "add_database_arguments",
    "add_report_arguments",
    "build_report",
    "options_from_args",
    "plot_over_time",
]


@dataclass
class ReportOptions:
    """What ``build_report`` computes. ``baselines``: names for ``analysis.baselines``;
    ``metrics``: {name: distance callable} scored beside them (e.g. learned metrics);
    ``dpam_dir``: the public DPAM files, or None; ``n_boot``: bootstrap replicates per fit;
    ``n_folds``: cross-validation folds by reference."""

    rules: ScreeningRules = field(default_factory=ScreeningRules)
    baselines: list[str] = field(default_factory=list)
    metrics: dict[str, DistanceFn] = field(default_factory=dict)
    dpam_dir: str | None = None
    experiment: str | None = None
    n_boot: int = 500
    seed: int = 0
    n_folds: int = 5
    progress: bool = True


def plot_over_time(judgments: pd.DataFrame, out_png: Path) -> None:
    """Cumulative judgments per trial kind over answer time (UTC), from the tidy table's
    ``kind`` and ``answered_at``; PNG + PDF (``analysis.figures.save``). Raises OSError
    when the files cannot be written."""
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


def build_report(url: str | None, out_dir, options: ReportOptions | None = None) -> Path:
    """Analyse the database at ``url`` and write the report into ``out_dir``; returns index.html.

    ``url``: a SQLAlchemy URL (None: ``DATABASE_URL`` or the web app's SQLite file).

    Raises:
        JudgmentsError: the database cannot be read (``analysis.judgments.load_judgments``).
        ValueError: it holds no judgments yet.
        OSError: ``out_dir`` cannot be written.
    """
    from tqdm import tqdm

    from .agreement import AudioCache, agreement, agreement_table, plot_calibration
    from .baselines import make_baselines
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
    sections.append(
        section(
            "Worker screening",
            note=f"{len(screened)} workers, {n_ex} excluded; rules: {opts.rules.to_dict()}. "
            f"{len(kept)} of {len(judgments)} judgments kept.",
            blocks=[
                table(
                    screened,
                    [
                        "worker",
                        "excluded",
                        "reasons",
                        "n_main",
                        "n_catch",
                        "catch_accuracy",
                        "false_alarm_rate",
                        "lapse_rate",
                        "headphone_passed",
                        "median_rt_ms",
                        "underplayed_fraction",
                        "notes",
                    ],
                )
            ],
        )
    )

    # --- JNDs
    main = kept[(kept["kind"] == "main") & kept["response_different"].notna()]
    n_main_all = int((judgments["kind"] == "main").sum())
    if main.empty:
        msg = (
            f"no main-trial judgments from included workers ({n_main_all} main trials in the database, "
            f"{len(judgments)} judgments of any kind): no JND fits and no metric agreement"
        )
        warnings_.append(msg)
        sections.append(section("JNDs", warnings=[msg]))
    else:
        with tqdm(total=n_fit_units(main), desc="psychometric fits", disable=not opts.progress) as bar:
            tables = jnd_tables(kept, n_boot=opts.n_boot, rng=rng, progress=bar.update)
        for key, name in (
            ("by_family", "jnd_by_family.csv"),
            ("by_reference", "jnd_by_reference.csv"),
            ("by_participant", "jnd_by_participant.csv"),
        ):
            tables[key].to_csv(out / name, index=False, lineterminator="\n")
        figs = []
        for family, (fit, trials, catch) in tables["fits"].items():
            png = out / f"psychometric_{family}.png"
            plot_family_curve(family, fit, trials, catch, tables["scales"][family], png)
            figs.append(figure(png, f"psychometric curve: {family}"))
        plot_jnd_distribution(tables["by_participant"], out / "jnd_distribution.png")
        cols = [
            "family",
            "estimable",
            "jnd_text",
            "physical_param",
            "jnd_physical_text",
            "n_trials",
            "n_participants",
            "n_identical",
            "identical_fa_rate",
            "guess_rate",
            "lapse_rate",
            "reason",
            "notes",
        ]
        sections.append(
            section(
                "Psychometric curves per family (pooled)",
                note="Logistic in level with the guess rate from identical pairs and a fitted lapse rate; JND = level "
                "where P(different) is halfway between the guess rate and 1 − lapse. Intervals are 95% profile "
                "likelihood; '< x' / '> x' mark an end the data cannot close inside the tested range; separated "
                "data are reported as the bracket between two tested levels. Physical units on the top axis.",
                figures=figs,
                blocks=[table(tables["by_family"], cols)],
            )
        )
        sections.append(
            section(
                "JND distributions across participants",
                figures=[figure(out / "jnd_distribution.png", "JND per participant")],
            )
        )
        sections.append(
            section(
                "Per reference", level=3, blocks=[table(tables["by_reference"], ["family", "reference"] + cols[1:])]
            )
        )
        sections.append(
            section(
                "Per participant", level=3, blocks=[table(tables["by_participant"], ["family", "worker"] + cols[1:])]
            )
        )

        # --- agreement
        pairs = pairs_table(kept, kinds=("main",))
        fns, skipped = make_baselines(opts.baselines)
        fns.update(opts.metrics)
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
                results.append(
                    agreement(
                        pairs, fn, n_folds=opts.n_folds, rng=np.random.default_rng(opts.seed), name=name, cache=cache
                    )
                )
            agreed = agreement_table(results)
            for name, note in skipped.items():
                agreed = pd.concat(
                    [agreed, pd.DataFrame([{"metric": name, "notes": f"skipped: {note}"}])], ignore_index=True
                )
            agreed.to_csv(out / "agreement.csv", index=False, lineterminator="\n")
            plot_calibration(results, out / "calibration.png")
            sections.append(
                section(
                    "Metric agreement",
                    note="ROC-AUC of the distance for different/same answers; accuracy at the best threshold, chosen on "
                    f"training folds split by reference ({opts.n_folds}-fold); Spearman ρ with the observed "
                    "P(different) per (reference, family, level); calibration of a held-out logistic on the distance.",
                    blocks=[
                        table(
                            agreed,
                            [
                                "metric",
                                "n_judgments",
                                "n_pairs",
                                "roc_auc",
                                "cv_accuracy",
                                "majority_accuracy",
                                "spearman_rho",
                                "spearman_p",
                                "brier",
                                "log_loss",
                                "notes",
                            ],
                        )
                    ],
                    figures=[figure(out / "calibration.png", "calibration per metric", wide=True)],
                )
            )

    # --- over time
    plot_over_time(judgments, out / "judgments_over_time.png")
    sections.append(
        section("Judgments over time", figures=[figure(out / "judgments_over_time.png", "judgments over time")])
    )

    # --- DPAM human data
    if opts.dpam_dir:
        sections.append(_dpam_section(Path(opts.dpam_dir), out, opts, warnings_))

    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    csvs = sorted(p.name for p in out.glob("*.csv"))
    subtitle = (
        f"database {source}; generated {when}; {len(judgments)} judgments ({n_main_all} main) from "
        f"{judgments['worker'].nunique()} workers."
    )
    page = render_page("jndlab report", subtitle, sections, warnings_, csvs)
    return atomic_write_text(out / "index.html", page)


def _dpam_section(dpam_dir: Path, out: Path, opts: ReportOptions, warnings_: list[str]) -> dict:
    from .dpam_human import run_dpam_jnd

    files = {k: dpam_dir / f"dataset_{k}.txt" for k in ("linear", "reverb", "eq", "combined")}
    present = {k: (p if p.is_file() else None) for k, p in files.items()}
    title = "DPAM human data (Manocha et al. 2020, CC-BY 4.0)"
    if not any(present.values()):
        msg = f"--dpam {dpam_dir}: none of dataset_linear/reverb/eq/combined.txt found; DPAM section skipped"
        warnings_.append(msg)
        return section(title, warnings=[msg])
    res = run_dpam_jnd(
        present["linear"],
        present["reverb"],
        out / "dpam",
        eq_path=present["eq"],
        combined_path=present["combined"],
        n_boot=0,
        seed=opts.seed,
        show_progress=opts.progress,
    )
    blocks, figs = [], []
    if "linear_jnd" in res:
        blocks.append(
            table(
                res["linear_jnd"],
                [
                    "family",
                    "base_level",
                    "estimable",
                    "jnd_text",
                    "n_trials",
                    "n_identical",
                    "identical_fa_rate",
                    "guess_rate",
                    "lapse_rate",
                    "reason",
                ],
            )
        )
    for kind in ("reverb", "eq", "combined"):
        if f"{kind}_fits" in res:
            blocks.append(heading(f"{kind}: JND as a distance between 0-100 level vectors"))
            blocks.append(
                table(
                    res[f"{kind}_fits"],
                    ["base_level", "estimable", "jnd_text", "n_trials", "n_identical", "identical_fa_rate", "reason"],
                )
            )
    for png in sorted((out / "dpam").glob("dpam_*.png")):
        figs.append(figure(png, png.stem.replace("dpam_", "DPAM "), href=f"dpam/{png.name}"))
    if "false_alarms" in res:
        blocks.append(heading("False alarms on identical pairs"))
        blocks.append(table(res["false_alarms"]))
    missing = [f"dataset_{k}.txt" for k, p in present.items() if p is None]
    return section(
        title,
        note="JND = change from the base level at which the fit is halfway between the "
        "false-alarm rate and 1 − lapse (95% profile-likelihood intervals); tables in dpam/."
        + (f" Not found in {dpam_dir}: {', '.join(missing)}." if missing else ""),
        figures=figs,
        blocks=blocks,
    )


# ----------------------------------------------------------------------------- command line


def add_database_arguments(p: argparse.ArgumentParser) -> None:
    """``--db URL`` and ``--experiment SLUG``: the database options of the analysis commands."""
    p.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="SQLAlchemy database URL (default: DATABASE_URL or the web app's instance/jndlab.sqlite)",
    )
    p.add_argument("--experiment", metavar="SLUG", help="only this experiment (slug or id)")


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m analysis report`` (``python -m model report`` adds ``--metric``)."""
    add_database_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (index.html, PNGs, CSVs)")
    p.add_argument(
        "--baselines",
        default=None,
        help="comma-separated baselines or 'all' or 'none' (default l1,l2,logmel_l1,mrstft,sisdr,pesq,stoi; "
        "all adds visqol,cdpam)",
    )
    p.add_argument(
        "--dpam",
        metavar="DIR",
        default=None,
        help="folder with the public DPAM files (default ../shared/dpam when present; 'none' to skip)",
    )
    p.add_argument("--n-boot", type=int, default=500, help="bootstrap replicates per fit (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds by reference (default 5)")
    p.add_argument("--no-progress", action="store_true")
    add_rule_arguments(p)


def options_from_args(args: argparse.Namespace, metrics: dict[str, DistanceFn] | None = None) -> ReportOptions:
    """``ReportOptions`` from the parsed ``add_report_arguments`` options, scoring ``metrics``
    ({name: distance callable}) beside the baselines. ``--dpam`` defaults to ../shared/dpam
    (from the working folder) when that folder exists.

    Raises:
        ValueError: an unknown baseline name or screening rule.
    """
    dpam = args.dpam
    if dpam is None:
        default = Path.cwd().parent / "shared" / "dpam"
        dpam = str(default) if default.is_dir() else None
    elif dpam == "none":
        dpam = None
    return ReportOptions(
        rules=rules_from_args(args),
        baselines=parse_names(args.baselines),
        metrics=dict(metrics or {}),
        dpam_dir=dpam,
        experiment=args.experiment,
        n_boot=args.n_boot,
        seed=args.seed,
        n_folds=args.folds,
        progress=not args.no_progress,
    )
