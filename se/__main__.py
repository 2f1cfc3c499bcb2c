"""Command line: ``python -m se {train,enhance,evaluate,make-heldout,ab-test,import-dpam} --help``.

Each subcommand is one ``Command(name, help, add_arguments, run)`` in ``COMMANDS``; a new
one is a module with those two functions and one more entry here (``se.ab_test``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perturbations.cli_errors import run_cli

log = logging.getLogger("se")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _snr_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in dB (e.g. -5,20), got {text!r}") from None
    return low, high


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


_CHUNK_HELP = (
    "auto (default): one pass over each file when it fits in memory (the one-pass output), else 10 s "
    "chunks; 0: always one pass; S: chunks of S seconds (DPAM's SE model normalises with whole-signal "
    "statistics, so chunks change its output)"
)


def _chunk_s(text: str):
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or seconds, got {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"chunk length must be >= 0 s, got {text!r}")
    return None if value == 0 else value


# -- train -------------------------------------------------------------------------------------
def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        required=True,
        help="output folder: last.pt, best.pt, history.json, training_curve.png, "
        "samples/, heldout/; a rerun with the same --out resumes",
    )
    p.add_argument(
        "--metric",
        help="learned-metric checkpoint (python -m model train) or a shipped metric's name "
        "(dpam: DPAM's published metric, human-trained): a loss term and a score",
    )
    p.add_argument(
        "--init",
        metavar="CKPT",
        help="fine-tune: start from this enhancer checkpoint or shipped model "
        "(dpam-se); its network and config replace --network*",
    )
    p.add_argument(
        "--loss",
        default=None,
        help="weighted terms of metric, l1, mrstft, e.g. 'metric:1,l1:1' "
        "(default: metric:1,l1:1 with --metric, else l1:1)",
    )
    p.add_argument(
        "--clean", required=True, help="clean speech: a corpus folder (synthesis) or the clean half of pairs"
    )
    p.add_argument("--noise-dir", help="noise files for synthesis (default: synthetic coloured noises only)")
    p.add_argument("--noisy", help="noisy half of paired folders (Valentini layout); with --clean")
    p.add_argument(
        "--heldout",
        help="synthesis: use this existing held-out set (se make-heldout; its clean clips "
        "are left out of training) (default: write OUT/heldout)",
    )
    p.add_argument(
        "--snr-db",
        type=_snr_range,
        default=(-5.0, 20.0),
        metavar="LOW,HIGH",
        help="synthesis SNR range in dB (default -5,20)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimizer steps")
    budget.add_argument("--epochs", type=int, help="passes over the training clips (default 10)")
    p.add_argument("--batch-size", type=int, default=8, help="global batch over all processes")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument(
        "--segment-s",
        type=float,
        default=1.0,
        help="random training crop in seconds (0: whole clips, as DPAM trained; needs --batch-size 1 "
        "unless all clips have one length)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--sample-every",
        type=int,
        default=1,
        help="write enhanced samples + spectrograms every N epochs (or N steps with --steps)",
    )
    p.add_argument(
        "--eval-every", type=int, help="validate + checkpoint every N epochs/steps (default: --sample-every)"
    )
    p.add_argument("--val-files", type=int, default=8, help="held-out files scored at each validation")
    p.add_argument("--network", default="can", help="architecture name (se.networks.NETWORKS)")
    p.add_argument("--sample-rate", type=int, default=16000, help="the network's sample rate in Hz")
    p.add_argument(
        "--network-config",
        type=_json_object,
        default={},
        metavar="JSON",
        help="the network's other options, e.g. '{\"channels\": 32}' (default: the architecture's)",
    )
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--no-progress", action="store_true")


def _train(args) -> int:
    from se.trainer import TrainConfig, train

    loss = args.loss or ("metric:1,l1:1" if args.metric else "l1:1")
    cfg = TrainConfig(
        out=args.out,
        loss=loss,
        metric_checkpoint=args.metric,
        network=args.network,
        network_config={**args.network_config, "sample_rate": args.sample_rate},
        init_checkpoint=args.init,
        clean_dir=args.clean,
        noise_dir=args.noise_dir,
        noisy_dir=args.noisy,
        heldout_dir=args.heldout,
        snr_db=args.snr_db,
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        segment_s=args.segment_s or None,
        seed=args.seed,
        sample_every=args.sample_every,
        eval_every=args.eval_every,
        val_files=args.val_files,
        amp=not args.no_amp,
        progress=not args.no_progress,
    )
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only the main process reports
    last = summary["history"][-1] if summary["history"] else {}
    print(
        f"trained {summary['steps']} step(s) with loss {loss}; held-out loss {last.get('val_loss', float('nan')):.4f}, "
        f"SI-SDR {last.get('val_si_sdr_db', float('nan')):.2f} dB; checkpoints in {args.out}"
    )
    return 0


# -- enhance -----------------------------------------------------------------------------------
def _enhance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", metavar="IN", help="audio file or folder")
    p.add_argument("output", metavar="OUT", help="output file (or folder; a folder input mirrors into it)")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="enhancer checkpoint (python -m se train), or a shipped model's name: dpam-se (DPAM's published SE model)",
    )
    p.add_argument("--chunk-s", type=_chunk_s, default="auto", help=_CHUNK_HELP)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    p.add_argument("--no-progress", action="store_true")


def _enhance(args) -> int:
    from se.enhance import Enhancer

    enhancer = Enhancer.from_checkpoint(args.checkpoint, device=args.device, chunk_s=args.chunk_s)
    done = enhancer.enhance_path(args.input, args.output, progress=not args.no_progress)
    scaled = [d for d in done if d["gain_db"] < 0]
    print(
        f"enhanced {len(done)} file(s) into {args.output}"
        + (f"; {len(scaled)} scaled down to avoid clipping" if scaled else "")
    )
    return 0


# -- evaluate ----------------------------------------------------------------------------------
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="enhancer checkpoint")
    p.add_argument(
        "--data", required=True, help="held-out set: noisy_testset_wav/ + clean_testset_wav/ (+ heldout.csv)"
    )
    p.add_argument("--metric", help="learned-metric checkpoint to score with (optional)")
    p.add_argument("--workers", type=int, default=2, help="processes for PESQ/STOI/SI-SDR (0: this process)")
    p.add_argument("--out", required=True, help="output folder: per_file.csv, summary.md, summary.json, enhanced/")
    p.add_argument("--chunk-s", type=_chunk_s, default="auto", help=_CHUNK_HELP)
    p.add_argument("--device")
    p.add_argument("--no-progress", action="store_true")


def _evaluate(args) -> int:
    from se.evaluate import evaluate

    result = evaluate(
        args.checkpoint,
        args.data,
        args.out,
        metric_checkpoint=args.metric,
        workers=args.workers,
        chunk_s=args.chunk_s,
        progress=not args.no_progress,
        device=args.device,
    )
    from se.evaluate import worse_warning

    print((Path(args.out) / "summary.md").read_text(), end="")
    print(f"evaluated {result['files']} file(s); tables in {args.out}")
    if result["worse_than_input"]:
        print(f"warning: {worse_warning(result['worse_than_input'], result['files'])}", file=sys.stderr)
    return 0


# -- make-heldout ------------------------------------------------------------------------------
def _heldout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clean", required=True, help="clean corpus folder")
    p.add_argument("--noise-dir", help="noise files (default: synthetic coloured noises only)")
    p.add_argument("--out", required=True, help="folder for noisy_testset_wav/, clean_testset_wav/, heldout.csv")
    p.add_argument("--snr-db", type=_snr_range, default=(-5.0, 20.0), metavar="LOW,HIGH")
    p.add_argument("--fraction", type=float, default=0.1, help="share of the corpus held out (same split as train)")
    p.add_argument("--max-files", type=int, default=100)
    p.add_argument("--max-s", type=float, default=10.0, help="keep at most this many seconds per clip")
    p.add_argument(
        "--mixtures-per-clip",
        type=int,
        default=1,
        help="noisy versions (noise, SNR) of each held-out clip: <id>__m<k>.wav (default 1: <id>.wav)",
    )
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--seed", type=int, default=0)


def _heldout(args) -> int:
    from se.data import NoiseSpec, split_clean_corpus, write_heldout

    _, paths, ids = split_clean_corpus(args.clean, args.fraction, args.seed, args.max_files)
    if not paths:
        raise ValueError(f"{args.clean}: nothing held out (raise --fraction)")
    csv_path = write_heldout(
        paths,
        ids,
        args.out,
        NoiseSpec(args.snr_db, args.noise_dir),
        args.sample_rate,
        args.seed,
        args.max_s,
        mixtures_per_clip=args.mixtures_per_clip,
    )
    print(
        f"wrote {len(paths) * args.mixtures_per_clip} held-out pair(s) from {len(paths)} clean clip(s) "
        f"(training with --heldout {args.out} leaves those clips out); parameters in {csv_path}"
    )
    return 0


COMMANDS = (
    Command("train", "train an enhancer (L1, MR-STFT and/or the learned metric)", _train_args, _train),
    Command("enhance", "enhance a file or a folder", _enhance_args, _enhance),
    Command("evaluate", "PESQ, STOI, SI-SDR and the learned metric on a held-out set", _evaluate_args, _evaluate),
    Command("make-heldout", "write a fixed synthetic held-out set", _heldout_args, _heldout),
    Command(
        "import-dpam",
        "convert DPAM's published TensorFlow SE checkpoint into a jndlab enhancer (needs TensorFlow)",
        lambda p: _dpam_import().add_arguments(p),
        lambda args: _dpam_import().run(args),
    ),
    Command(
        "ab-test",
        "create an A/B 'which is closer to clean?' listening test of two systems' outputs",
        lambda p: _ab_test().add_arguments(p),
        lambda args: _ab_test().run(args),
    ),
)


def _dpam_import():
    from se import dpam_import  # TensorFlow is imported inside, only when converting

    return dpam_import


def _ab_test():
    from se import ab_test  # imports the web app's packages: only when asked for

    return ab_test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m se", description="jndlab speech enhancement.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_arguments(sub.add_parser(command.name, help=command.help, description=command.help))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    run = {c.name: c.run for c in COMMANDS}[args.command]
    return run_cli(lambda: run(args), prog=f"python -m se {args.command}")


if __name__ == "__main__":
    sys.exit(main())
