"""``python -m analysis SUBCOMMAND ...``

Each subcommand registers itself in ``SUBCOMMANDS`` with a function that adds
its arguments and a function that runs it (returning an exit code), so `export`
and `report` can be added beside `dpam-jnd` without touching the others.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _add_dpam_jnd(p: argparse.ArgumentParser) -> None:
    p.add_argument("--linear", help="DPAM dataset_linear.txt (triplets with a 4th family column)")
    p.add_argument("--reverb", help="DPAM dataset_reverb.txt")
    p.add_argument("--out", required=True, help="output folder for CSV tables and PNG plots")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates per fit (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap generator (default 0)")
    p.add_argument("--model", choices=["logistic", "weibull"], default="logistic")
    p.add_argument("--guess-source", choices=["family", "base", "joint"], default="family",
                   help="false-alarm rate from the family's identical pairs (default), the base level's, "
                        "or fitted jointly with the curve")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def _run_dpam_jnd(args: argparse.Namespace) -> int:
    from .dpam_human import format_jnd_table, run_dpam_jnd

    if not args.linear and not args.reverb:
        raise ValueError("give --linear and/or --reverb")
    res = run_dpam_jnd(args.linear, args.reverb, args.out, n_boot=args.n_boot, seed=args.seed,
                       model=args.model, guess_source=args.guess_source, plots=not args.no_plots)
    if "linear_jnd" in res:
        print(format_jnd_table(res["linear_jnd"]))
    if "reverb_fits" in res:
        r = res["reverb_fits"]
        print("\nreverb (threshold in distance of 0-100 level pairs):")
        print(r[["base_level", "estimable", "n_trials", "jnd_level", "jnd_level_ci_low", "jnd_level_ci_high",
                 "guess_rate", "lapse_rate", "reason"]].to_string(index=False))
    if "false_alarms" in res:
        print("\nfalse alarms on identical pairs:")
        print(res["false_alarms"].to_string(index=False))
    print(f"\nwrote tables and plots to {args.out}")
    return 0


# name -> (help, add_arguments, run)
SUBCOMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "dpam-jnd": ("psychometric JNDs from the public DPAM human judgments", _add_dpam_jnd, _run_dpam_jnd),
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
    try:
        return args.run(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
