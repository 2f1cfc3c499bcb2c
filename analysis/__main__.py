"""``python -m analysis SUBCOMMAND ...``

Each subcommand registers itself in ``SUBCOMMANDS`` with a function that adds
its arguments and a function that runs it (returning an exit code), so `export`
and `report` can be added beside `dpam-jnd` without touching the others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from perturbations.cli_errors import run_cli


def _add_dpam_jnd(p: argparse.ArgumentParser) -> None:
    p.add_argument("--linear", help="DPAM dataset_linear.txt (triplets with a 4th family column)")
    p.add_argument("--reverb", help="DPAM dataset_reverb.txt")
    p.add_argument("--eq", help="DPAM dataset_eq.txt (eq_K/G1_G2_G3_<clip>.wav: three band gains on 0-100)")
    p.add_argument(
        "--combined", help="DPAM dataset_combined.txt (combined_K/L1_L2_L3_L4_<clip>.wav: four levels on 0-100)"
    )
    p.add_argument("--out", required=True, help="output folder for CSV tables and PNG plots")
    p.add_argument(
        "--n-boot",
        type=int,
        default=200,
        help="bootstrap replicates per fit for the slope interval (threshold intervals are profile "
        "likelihood and need none; default 200, 0 = none)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap generator (default 0)")
    p.add_argument("--model", choices=["logistic", "weibull"], default="logistic")
    p.add_argument(
        "--guess-source",
        choices=["family", "base", "joint"],
        default="family",
        help="false-alarm rate from the family's identical pairs (default), the base level's, "
        "or fitted jointly with the curve",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def _run_dpam_jnd(args: argparse.Namespace) -> int:
    from .dpam_human import format_distance_table, format_jnd_table, run_dpam_jnd

    if not (args.linear or args.reverb or args.eq or args.combined):
        raise ValueError("give at least one of --linear, --reverb, --eq, --combined")
    res = run_dpam_jnd(
        args.linear,
        args.reverb,
        args.out,
        eq_path=args.eq,
        combined_path=args.combined,
        n_boot=args.n_boot,
        seed=args.seed,
        model=args.model,
        guess_source=args.guess_source,
        plots=not args.no_plots,
    )
    if "linear_jnd" in res:
        print(format_jnd_table(res["linear_jnd"]))
    for kind in ("reverb", "eq", "combined"):
        if f"{kind}_fits" in res:
            print(f"\n{kind} (JND as a distance between 0-100 level vectors):")
            print(format_distance_table(res[f"{kind}_fits"]))
    if "false_alarms" in res:
        print("\nfalse alarms on identical pairs:")
        print(res["false_alarms"].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\nwrote tables and plots to {args.out}")
    return 0


def _add_db(p: argparse.ArgumentParser) -> None:
    from .report import add_database_arguments

    add_database_arguments(p)


def _add_export(p: argparse.ArgumentParser) -> None:
    from .screening import add_rule_arguments

    _add_db(p)
    p.add_argument(
        "--out", required=True, metavar="FILE", help="DPAM triplet file to write (ref<TAB>perturbed<TAB>0|1)"
    )
    p.add_argument("--csv", metavar="FILE", help="also write the tidy CSV with every field of every judgment")
    p.add_argument(
        "--kinds",
        default="main",
        help="trial kinds in the triplets, comma-separated (default main; e.g. main,catch_identical)",
    )
    p.add_argument(
        "--audio-root-relative-to",
        metavar="DIR",
        help="write paths relative to DIR (default: the experiment's stimulus folder)",
    )
    p.add_argument("--no-header", action="store_true", help="omit the '# audio root: ...' comment line")
    p.add_argument("--screen", action="store_true", help="drop the judgments of workers the screening rules exclude")
    p.add_argument(
        "--include-screened-out",
        action="store_true",
        help="keep sessions that failed the headphone screen (dropped by default)",
    )
    add_rule_arguments(p)


def _run_export(args: argparse.Namespace) -> int:
    from .judgments import load_judgments, write_tidy_csv
    from .screening import included_judgments, rules_from_args
    from .triplets import triplet_rows, write_triplets

    df = load_judgments(args.db, experiment=args.experiment)
    source = df.attrs.get("database_url", args.db)
    if df.empty:
        raise ValueError(f"{source}: the database holds no judgments yet (no answered trials)")
    if args.csv:
        write_tidy_csv(df, args.csv)
        print(f"wrote {len(df)} judgments with {df.shape[1]} fields to {args.csv}")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    sel = df
    if args.screen:
        sel = included_judgments(sel, rules_from_args(args))
    elif not args.include_screened_out:
        sel = sel[sel["screening_passed"].ne(False).fillna(True).to_numpy(bool)]
    rows, root = triplet_rows(sel, kinds=kinds, relative_to=args.audio_root_relative_to)
    if rows.empty:
        counts = ", ".join(f"{k}: {n}" for k, n in df["kind"].value_counts().sort_index().items())
        raise ValueError(f"{source}: no {'/'.join(kinds)} judgments to export (found {counts})")
    header = None if args.no_header else f"jndlab triplets from {source}; kinds {','.join(kinds)}; audio root: {root}"
    write_triplets(rows, args.out, header=header)
    print(f"wrote {len(rows)} triplets to {args.out} (paths relative to {root})")
    return 0


def _add_screen(p: argparse.ArgumentParser) -> None:
    from .screening import add_rule_arguments

    _add_db(p)
    p.add_argument("--out", metavar="FILE", help="write the per-worker table as CSV")
    add_rule_arguments(p)


def _run_screen(args: argparse.Namespace) -> int:
    from .judgments import load_judgments
    from .screening import rules_from_args, screen

    df = load_judgments(args.db, experiment=args.experiment)
    if df.empty:
        raise ValueError(f"{df.attrs.get('database_url', args.db)}: the database holds no judgments yet")
    table = screen(df, rules_from_args(args))
    if args.out:
        table.to_csv(args.out, index=False, lineterminator="\n")
    print(
        table[
            ["worker", "excluded", "reasons", "n_main", "catch_accuracy", "false_alarm_rate", "lapse_rate"]
        ].to_string(index=False)
    )
    return 0


def _add_report(p: argparse.ArgumentParser) -> None:
    from .report import add_report_arguments

    add_report_arguments(p)
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME|CKPT",
        help="moved: learned metrics are scored by `python -m model report` (these options plus "
        "--metric); analysis does not load model checkpoints",
    )


def _run_report(args: argparse.Namespace) -> int:
    from .report import build_report, options_from_args

    if args.metric:
        raise ValueError(
            "--metric: learned metrics are scored by `python -m model report` (the same options "
            "plus --metric NAME|CKPT); analysis does not load model checkpoints"
        )
    index = build_report(args.db, args.out, options_from_args(args))
    print(f"wrote {index}")
    return 0


def _catch_accuracy(text: str) -> float | None:
    if text.strip().lower() in ("none", "off"):
        return None
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] or 'none', got {text}")
    return value


def _add_preference(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        metavar="URL_OR_PATH",
        default=None,
        help="SQLAlchemy database URL or SQLite file (default: DATABASE_URL or the web app's instance/jndlab.sqlite)",
    )
    p.add_argument(
        "--experiment", metavar="SLUG", help="the ab_preference experiment (slug or id; default: the only one)"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (index.html, preference.json, CSVs, PNGs)"
    )
    p.add_argument(
        "--min-catch-accuracy",
        type=_catch_accuracy,
        default=0.8,
        metavar="P",
        help="exclude workers below this accuracy on catch trials (default 0.8; 'none' to keep all)",
    )
    p.add_argument(
        "--exclude-skipped-playback",
        action="store_true",
        help="also exclude workers with a main trial where a clip was played 0 times",
    )
    p.add_argument(
        "--include-failed-headphones",
        action="store_true",
        help="keep sessions that failed the headphone screen (dropped by default)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=2000,
        metavar="N",
        help="listener-bootstrap replicates (default 2000; 0 to skip)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the listener bootstrap (default 0)")


def _run_preference(args: argparse.Namespace) -> int:
    from .preference import ABScreeningRules, write_preference_report

    rules = ABScreeningRules(
        min_catch_accuracy=args.min_catch_accuracy,
        require_headphone_screen=not args.include_failed_headphones,
        exclude_skipped_playback=args.exclude_skipped_playback,
    )
    analysis = write_preference_report(
        args.db, args.out, experiment=args.experiment, rules=rules, n_boot=args.bootstrap, seed=args.seed
    )
    for line in analysis.summary_lines():
        print(line)
    print(f"wrote {analysis.index_html}")
    return 0


# name -> (help, add_arguments, run)
SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "dpam-jnd": ("psychometric JNDs from the public DPAM human judgments", _add_dpam_jnd, _run_dpam_jnd),
    "export": ("DPAM triplets (and a tidy CSV) from a listening-test database", _add_export, _run_export),
    "screen": ("per-worker screening statistics and exclusions", _add_screen, _run_screen),
    "report": ("self-contained HTML report: screening, JNDs, metric agreement, DPAM data", _add_report, _run_report),
    "preference": (
        "A/B preference study: shares with exact and cluster-robust CIs, position bias, per item",
        _add_preference,
        _run_preference,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description="jndlab analysis tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, run) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
