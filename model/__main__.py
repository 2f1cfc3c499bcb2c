"""Command line: ``python -m model {train,distance,score,report,import-dpam} --help``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from perturbations.cli_errors import run_cli

log = logging.getLogger("model")


def _add_train(sub) -> None:
    from model.trainer import REGIMES

    p = sub.add_parser(
        "train",
        help="train a metric on judged pairs",
        description="Train a DPAM metric on same/different judgments. A rerun with the same "
        "--out resumes from OUT/last.pt.",
    )
    p.add_argument(
        "--judgments",
        required=True,
        nargs="+",
        metavar="db|FILE",
        help="'db' (the listening-test database) or DPAM triplet file(s)",
    )
    p.add_argument("--audio-root", help="folder the triplet paths are relative to (default: each file's folder)")
    p.add_argument(
        "--database-url", help="SQLAlchemy URL for --judgments db (default: DATABASE_URL or the app's SQLite file)"
    )
    p.add_argument("--experiment", help="--judgments db: one experiment (slug or id); default all")
    p.add_argument("--out", required=True, help="output folder: last.pt, best.pt, history.json, training_curve.png")
    p.add_argument("--regime", choices=REGIMES, default="scratch")
    p.add_argument(
        "--init",
        dest="init_checkpoint",
        metavar="NAME|CKPT",
        help="metric to start from: a shipped one (dpam, dpam-finetune, dpam-linear: DPAM's "
        "human-trained weights) or a checkpoint (needed for finetune; optional for linear)",
    )
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16, help="global batch over all processes")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--segment-s", type=float, default=2.0, help="training window in seconds")
    p.add_argument("--val-fraction", type=float, default=0.2, help="fraction of reference clips held out")
    p.add_argument("--patience", type=int, default=5, help="early stopping patience in epochs (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dropout", type=float, default=None, help="network dropout (default 0.1)")
    p.add_argument("--normalize-features", action="store_true", help="LPIPS-style unit-normalised features")
    p.add_argument("--no-augment", action="store_true", help="no gain/shift/swap augmentation")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--pretext-epochs", type=int, default=3)
    p.add_argument("--pretext-clips", type=int, default=256)
    p.add_argument(
        "--trained-on",
        choices=("human", "simulated", "mixed", "unknown"),
        help="who judged the triplet files; recorded in the checkpoint. With db it is read from the "
        "judgments (the simulator marks its client info) and a different value is an error",
    )
    p.add_argument("--no-progress", action="store_true")


def _cmd_train(args) -> int:
    import pandas as pd

    from model.checkpoint import describe, read_checkpoint
    from model.data import pairs_from_database, pairs_from_triplets
    from model.trainer import TrainConfig, train

    frames, sources = [], set()
    for item in args.judgments:
        if item == "db":
            read = pairs_from_database(args.database_url, experiment=args.experiment)
            print(
                f"judgments from {read.database_url}: {len(read.pairs)} main-trial pairs kept, "
                f"judged by {read.trained_on} listeners"
            )
            print(read.screening_summary())
            if read.pairs.empty:
                raise ValueError("the database holds no main-trial judgments from workers who passed screening")
            if args.trained_on and args.trained_on != read.trained_on:
                raise ValueError(
                    f"--trained-on {args.trained_on} contradicts the database, whose judgments are "
                    f"{read.trained_on} (from the simulator's 'simulated' mark in the client info)"
                )
            frames.append(read.pairs)
            sources.add(read.trained_on)
        else:
            if not Path(item).is_file():
                raise FileNotFoundError(f"{item}: triplet file not found")
            frames.append(pairs_from_triplets(item, args.audio_root))
            sources.add(args.trained_on or "unknown")
    if "unknown" in sources:
        trained_on = "unknown"
    elif len(sources) == 1:
        trained_on = sources.pop()
    else:
        trained_on = "mixed"
    model_kwargs = {"normalize_features": args.normalize_features}
    if args.dropout is not None:
        model_kwargs["dropout"] = args.dropout
    cfg = TrainConfig(
        regime=args.regime,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        segment_s=args.segment_s,
        val_fraction=args.val_fraction,
        seed=args.seed,
        patience=args.patience,
        amp=not args.no_amp,
        augment=not args.no_augment,
        init_checkpoint=args.init_checkpoint,
        pretext_epochs=args.pretext_epochs,
        pretext_clips=args.pretext_clips,
        model=model_kwargs,
        progress=not args.no_progress,
    )
    summary = train(pd.concat(frames, ignore_index=True), args.out, cfg, trained_on)
    if summary["history"]:
        last = summary["history"][-1]
        print(
            f"trained {len(summary['history'])} epoch(s); best BCE {summary['best_bce']:.4f}; "
            f"last val ROC-AUC {last.get('val_roc_auc', float('nan')):.4f}; checkpoints in {args.out}"
        )
        print(describe(read_checkpoint(Path(args.out) / "last.pt")))
    return 0


def _load(ckpt: str):
    """The metric and its one-line note (what it is and what it was trained on)."""
    from model import load_metric, metric_path
    from model.checkpoint import describe, read_checkpoint

    metric = load_metric(ckpt)
    return metric, describe(read_checkpoint(metric_path(ckpt)))


def _add_distance(sub) -> None:
    p = sub.add_parser(
        "distance",
        help="distance between two audio files",
        description="Print the metric's distance between REF and TEST; the last line is the number.",
    )
    p.add_argument("ref")
    p.add_argument("test")
    p.add_argument(
        "--checkpoint",
        default="dpam",
        metavar="NAME|CKPT",
        help="shipped metric (dpam, dpam-finetune, dpam-linear) or checkpoint; default dpam, "
        "DPAM's published scratch metric trained on human JND judgments",
    )


def _cmd_distance(args) -> int:
    import torch

    from model.data import AudioStore

    metric, note = _load(args.checkpoint)
    store = AudioStore(metric.sample_rate, cache_items=0)
    a, b = store.load(args.ref), store.load(args.test)
    if a is None or b is None:
        bad = args.ref if a is None else args.test
        raise ValueError(f"{bad}: {store.bad[bad]}")
    n = min(len(a), len(b))
    if len(a) != len(b):
        log.info("lengths differ (%d vs %d samples); both cropped to %d", len(a), len(b), n)
    device = next(metric.parameters()).device
    with torch.no_grad():
        d = float(metric(torch.from_numpy(a[:n]).to(device), torch.from_numpy(b[:n]).to(device)))
    print(note)
    print(f"{d:.8g}")
    return 0


def _add_score(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score many pairs (batched) into a TSV",
        description="Score every pair of a DPAM-format pair file; writes the rows plus a distance column.",
    )
    p.add_argument("--pairs", required=True, help="DPAM-format file: ref<TAB>test<TAB>label")
    p.add_argument(
        "--checkpoint",
        default="dpam",
        metavar="NAME|CKPT",
        help="shipped metric (dpam, dpam-finetune, dpam-linear) or checkpoint; default dpam",
    )
    p.add_argument("--audio-root", help="folder the pair paths are relative to (default: the file's folder)")
    p.add_argument("--out", required=True, help="output TSV")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-progress", action="store_true")


def _cmd_score(args) -> int:
    from analysis.triplets import read_triplets
    from model.metrics import roc_auc
    from model.score import score_pairs
    from perturbations.files import atomic_path

    if not Path(args.pairs).is_file():
        raise FileNotFoundError(f"{args.pairs}: pair file not found")
    metric, note = _load(args.checkpoint)
    df = read_triplets(args.pairs, args.audio_root or Path(args.pairs).parent)
    df = df.rename(columns={"perturbed_audio": "test_audio"})
    scored = score_pairs(metric, df, args.batch_size, progress=not args.no_progress)
    out = scored[["ref", "perturbed", "label", "distance"]]
    with atomic_path(args.out) as tmp:
        out.to_csv(tmp, sep="\t", index=False, float_format="%.8g", na_rep="nan")
    n_bad = int(out["distance"].isna().sum())
    print(note)
    auc = roc_auc(out["distance"].dropna(), out.loc[out["distance"].notna(), "label"])
    print(f"scored {len(out) - n_bad} of {len(out)} pairs into {args.out}; ROC-AUC vs labels {auc:.4f}")
    return 0


def _add_report(sub) -> None:
    from analysis.report import add_report_arguments

    p = sub.add_parser(
        "report",
        help="the analysis report with learned metrics scored beside the baselines",
        description="`python -m analysis report` (screening, JNDs, metric agreement, DPAM data) "
        "with jndlab metrics scored in the metric agreement.",
    )
    add_report_arguments(p)
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME|CKPT",
        help="a jndlab metric to score (repeatable): a shipped one (dpam, dpam-finetune, dpam-linear: "
        "DPAM's published metrics, trained on human JND judgments) or a checkpoint",
    )


def _cmd_report(args) -> int:
    from analysis.report import build_report, options_from_args
    from model.score import learned_distance

    metrics = {f"learned:{Path(m).name}": learned_distance(m) for m in args.metric}
    index = build_report(args.db, args.out, options_from_args(args, metrics))
    print(f"wrote {index}")
    return 0


def _add_import(sub) -> None:
    from model.dpam_import import VARIANTS

    p = sub.add_parser(
        "import-dpam",
        help="convert a published DPAM TensorFlow checkpoint",
        description="Convert one of DPAM's published TensorFlow 1 metric checkpoints "
        "(pranaymanocha/PerceptualAudio, dpam/pre-model/*_loss) into a jndlab checkpoint. "
        "Reads it with TensorFlow's checkpoint reader: from this interpreter when it has "
        "TensorFlow, else from the tools environment .venv-tf (tools/tf/requirements.txt).",
    )
    p.add_argument(
        "--tf-checkpoint",
        required=True,
        metavar="DIR",
        help="folder holding the TensorBundle (*.index + *.data-*), or its prefix",
    )
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--out", required=True, help="the jndlab checkpoint to write")
    p.add_argument(
        "--tf-python", help="interpreter with TensorFlow (default: this one if it has it, else .venv-tf/bin/python)"
    )


def _cmd_import(args) -> int:
    from model.dpam_import import main_import

    return main_import(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description="jndlab's learned perceptual metric (DPAM).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_distance(sub)
    _add_score(sub)
    _add_report(sub)
    _add_import(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # imported with the database reader; chatty at INFO
    run = {
        "train": _cmd_train,
        "distance": _cmd_distance,
        "score": _cmd_score,
        "report": _cmd_report,
        "import-dpam": _cmd_import,
    }[args.command]
    return run_cli(lambda: run(args), prog=f"python -m model {args.command}")  # JudgmentsError is a ValueError


if __name__ == "__main__":
    sys.exit(main())
