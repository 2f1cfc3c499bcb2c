"""``python -m perturbations``: generate, list, preview and demo-corpus.

Every subcommand exits 0 on success and non-zero with a one-line ``error: ...`` on failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perturbations.audio import SUPPORTED_SAMPLE_RATES
from perturbations.cli_errors import fail, run_cli

LAYOUTS = ("auto", "folder", "vctk", "daps", "librispeech")


def _levels(text: str):
    from perturbations.generate.plan import parse_levels

    try:
        return parse_levels(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--levels: ")) from None


def _family_options(args: argparse.Namespace) -> dict[str, str]:
    options = {}
    for name in ("noise_dir", "rir_dir"):
        value = getattr(args, name, None)
        if value is not None:
            if not Path(value).is_dir():
                raise ValueError(f"--{name.replace('_', '-')} {value} is not a folder")
            options[name] = str(Path(value).resolve())
    return options


def _add_family_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--noise-dir", help="folder of noise recordings for the noise family (default: synthetic noises)"
    )
    parser.add_argument(
        "--rir-dir", help="folder of room impulse responses for the reverb family (default: simulated rooms)"
    )


def _add_audio_options(parser: argparse.ArgumentParser) -> None:
    from perturbations.generate.plan import DEFAULT_SAMPLE_RATE, DEFAULT_SEED

    parser.add_argument(
        "--sample-rate",
        type=int,
        default=DEFAULT_SAMPLE_RATE,
        choices=SUPPORTED_SAMPLE_RATES,
        help="sample rate of every output, Hz (default %(default)s)",
    )
    parser.add_argument(
        "--resample", action="store_true", help="resample inputs at another rate (default: skip them with a message)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="global seed (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    from perturbations.generate.plan import DEFAULT_LEVELS, SUBTYPES, TARGET_LUFS

    parser = argparse.ArgumentParser(
        prog="python -m perturbations", description="jndlab perturbation engine: JND stimulus ladders with a manifest."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser(
        "generate",
        help="generate a stimulus set and its manifest.csv",
        description="For every input clip × family × level, write a loudness-matched, sample-aligned "
        "stimulus plus OUTPUT/manifest.csv. Rerun the same command to resume an interrupted run.",
    )
    gen.add_argument("--input", required=True, help="folder of clean recordings (wav, flac, ogg, mp3)")
    gen.add_argument("--output", required=True, help="folder for the stimuli and manifest.csv")
    gen.add_argument(
        "--families",
        default=None,
        help="comma-separated families, or 'all' (default: every family except chain; see 'list')",
    )
    gen.add_argument(
        "--levels",
        type=_levels,
        default=str(DEFAULT_LEVELS),
        help="N levels evenly spaced over 0..100, or a list such as 0,30,60 (default %(default)s)",
    )
    where = gen.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1, help="local worker processes (default %(default)s)")
    where.add_argument("--scheduler", help="address of an existing Dask distributed scheduler, e.g. tcp://host:8786")
    _add_audio_options(gen)
    gen.add_argument("--layout", choices=LAYOUTS, default="auto", help="corpus layout of --input (default %(default)s)")
    gen.add_argument(
        "--target-lufs",
        type=float,
        default=TARGET_LUFS,
        help="loudness every reference is normalised to, LUFS (default %(default)s)",
    )
    gen.add_argument("--subtype", choices=SUBTYPES, default="FLOAT", help="WAV sample format (default %(default)s)")
    gen.add_argument(
        "--strict", action="store_true", help="exit non-zero if any input was skipped or any stimulus failed"
    )
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_family_options(gen)

    sub.add_parser(
        "list",
        help="list the families, their parameters and ranges",
        description="Print every family with its physical parameters at level 0 and level 100.",
    )

    prev = sub.add_parser(
        "preview",
        help="write every level of one family for one clip, plus a spectrogram grid",
        description="Write REFERENCE normalised, every level of FAMILY and spectrograms.png into --out.",
    )
    prev.add_argument("reference", metavar="REF", help="a clean recording")
    prev.add_argument("--family", required=True, help="the family to preview (see 'list')")
    prev.add_argument("--out", help="output folder (default: ./preview-STEM-FAMILY)")
    prev.add_argument(
        "--levels",
        type=_levels,
        default=str(DEFAULT_LEVELS),
        help="N levels over 0..100, or a list (default %(default)s)",
    )
    _add_audio_options(prev)
    _add_family_options(prev)

    demo = sub.add_parser(
        "demo-corpus",
        help="build the demo corpus (speech and noises) into --out",
        description="Build the demo corpus from pocketsphinx-testdata and espeak-ng into --out.",
    )
    demo.add_argument("--out", default="data", help="output folder (default %(default)s)")

    ab = sub.add_parser(
        "ab-set",
        help="an A/B preference stimulus set from folders of system outputs",
        description="Write OUT/manifest.csv and loudness-matched copies of the clean clips and of "
        "every system's output of them (matched by relative path), for a listening-test "
        "experiment of type ab_preference.",
    )
    ab.add_argument("--clean", required=True, help="folder of clean clips (the references)")
    ab.add_argument(
        "--system",
        action="append",
        type=_named_folder,
        required=True,
        metavar="NAME=FOLDER",
        help="a compared system's outputs; give at least two",
    )
    ab.add_argument(
        "--anchor",
        type=_named_folder,
        metavar="NAME=FOLDER",
        help="the system catch and practice trials set against the clean clip, e.g. noisy=heldout/noisy",
    )
    ab.add_argument("--out", required=True, help="output folder")
    ab.add_argument(
        "--no-match-loudness",
        action="store_true",
        help="keep every output at its own level (default: match each to its clean clip, BS.1770)",
    )
    ab.add_argument("--max-items", type=int, help="a seeded random subset of the clean clips")
    ab.add_argument("--seed", type=int, default=0, help="seed of --max-items (default %(default)s)")
    return parser


def _named_folder(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {text!r}")
    return name, folder


def cmd_generate(args: argparse.Namespace) -> int:
    from perturbations.generate import GenerateConfig, generate

    if args.workers < 1:
        return fail(f"--workers must be at least 1, got {args.workers}")
    config = GenerateConfig(
        input_dir=Path(args.input),
        output_dir=Path(args.output),
        families=None if args.families is None else tuple(args.families.split(",")),
        levels=tuple(args.levels),
        seed=args.seed,
        sample_rate=args.sample_rate,
        resample=args.resample,
        target_lufs=args.target_lufs,
        subtype=args.subtype,
        layout=args.layout,
        family_options=tuple(sorted(_family_options(args).items())),
    )
    summary = generate(config, workers=args.workers, scheduler=args.scheduler, progress=not args.no_progress)
    print(summary.format())
    if summary.num_stimuli == 0:
        reason = f"{len(summary.skipped)} input(s) skipped" if summary.skipped else "every stimulus failed"
        return fail(f"nothing could be produced from {args.input} ({reason}; see above)")
    if args.strict and (summary.skipped or summary.failed):
        return fail(f"--strict: {len(summary.skipped)} input(s) skipped, {len(summary.failed)} stimulus/stimuli failed")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from perturbations.registry import available_families, get_family

    for name in available_families():
        family = get_family(name)
        print(f"{name}  [{family.category}]  {family.description}")
        if family.parameters:
            width = max(len(p.name) for p in family.parameters)
            print(f"    {'parameter':<{width}}  {'level 0':>12}  {'level 100':>12}  description")
            for p in family.parameters:
                print(
                    f"    {p.name:<{width}}  {_value(p.at_level_0):>12}  {_value(p.at_level_100):>12}  {p.description}"
                )
        print()
    return 0


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def cmd_preview(args: argparse.Namespace) -> int:
    from perturbations.preview import SPECTROGRAM_NAME, preview

    out = preview(
        args.reference,
        args.family,
        out_dir=args.out,
        levels=args.levels,
        seed=args.seed,
        sample_rate=args.sample_rate,
        resample=args.resample,
        family_options=_family_options(args),
    )
    print(f"wrote {len(args.levels)} level(s) of {args.family} and {out / SPECTROGRAM_NAME}")
    return 0


def cmd_demo_corpus(args: argparse.Namespace) -> int:
    from perturbations.demo_corpus import build

    build(Path(args.out), progress=True)
    print(f"demo corpus written to {args.out}")
    return 0


def cmd_ab_set(args: argparse.Namespace) -> int:
    from perturbations.ab_set import build_ab_set

    systems = dict(args.system)
    if len(systems) != len(args.system):
        return fail("each --system needs its own name")
    summary = build_ab_set(
        args.clean,
        systems,
        args.out,
        anchor=args.anchor,
        match_loudness=not args.no_match_loudness,
        max_items=args.max_items,
        seed=args.seed,
    )
    print(summary.format())
    return 0


COMMANDS = {
    "generate": cmd_generate,
    "list": cmd_list,
    "preview": cmd_preview,
    "demo-corpus": cmd_demo_corpus,
    "ab-set": cmd_ab_set,
}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (0, 1 with a one-line ``error: ...``, 130 on Ctrl-C).

    GenerateError and demo_corpus.CorpusBuildError are RuntimeErrors, AudioError and
    ManifestError ValueErrors: ``cli_errors.run_cli`` reports each in one line.
    """
    args = build_parser().parse_args(argv)
    return run_cli(lambda: COMMANDS[args.command](args), interrupted_hint="rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
