"""Agreement with listeners on held-out references: the learned metric against every baseline.

1. Judgments: the listening-test database at ``--db`` (default: the one the bigger
   pipeline run below writes), read and screened exactly as ``python -m model train
   --judgments db`` reads them (``model.data.pairs_from_database``: analysis.judgments ->
   analysis.screening default rules -> pairs_table).
2. References are split (``model.data.split_by_reference``, ``--test-fraction``, ``--seed``):
   the metric is trained (``model.trainer.train``) on the training references only; its own
   validation split for early stopping is again drawn from the training references.
3. The held-out references' judgments are scored with ``analysis.agreement.agreement`` for
   the learned metric (best.pt) and every baseline of ``analysis.baselines`` (ROC-AUC,
   accuracy at a threshold cross-validated over references, Spearman over pair conditions).

Data, once (about 7 minutes of simulation on 2 cores; steps 5-7 may be stopped):

    PIPELINE_OUT=out/agreement PIPELINE_CLIPS=12 PIPELINE_PARTICIPANTS=60 PIPELINE_SEED=1 scripts/pipeline.sh

Then:

    .venv/bin/python benchmarks/metric_agreement.py --out out/agreement/run2            # seed 0 split
    .venv/bin/python benchmarks/metric_agreement.py --out out/agreement/run2_seed1 --seed 1

(about 8 minutes of training each on 2 busy CPU cores; CDPAM alone takes ~13 minutes
to score the held-out pairs there, ``--baselines l1,l2,...`` leaves it out).

writes ``agreement.csv``, ``agreement.md`` and the model folder under ``--out``; rerunning
with the same ``--out`` reuses a finished training run (the trainer resumes/returns).
Simulated listeners only: the table says nothing about human perception.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DB = f"sqlite:///{ROOT / 'out' / 'agreement' / 'jndlab.sqlite'}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", default=DEFAULT_DB, help=f"database URL (default {DEFAULT_DB})")
    p.add_argument("--experiment", default=None, help="slug or id (default: every experiment)")
    p.add_argument("--out", default=str(ROOT / "out" / "agreement" / "metric_agreement"))
    p.add_argument("--test-fraction", type=float, default=0.34, help="share of references held out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baselines", default="all", help="comma list or 'all' (analysis.baselines)")
    p.add_argument("--n-folds", type=int, default=4, help="reference folds for the CV threshold")
    p.add_argument("--checkpoint", help="score this checkpoint instead of training one")
    g = p.add_argument_group("training (model.trainer.TrainConfig)")
    g.add_argument("--regime", default="scratch", choices=("scratch", "pretrained", "linear", "finetune"))
    g.add_argument("--init", dest="init_checkpoint", default=None)
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--segment-s", type=float, default=0.5)
    g.add_argument("--val-fraction", type=float, default=0.2)
    g.add_argument("--patience", type=int, default=6)
    g.add_argument("--normalize-features", action="store_true")
    g.add_argument("--pretext-epochs", type=int, default=3)
    g.add_argument("--pretext-clips", type=int, default=256)
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    g.add_argument("--per-judgment", action="store_true",
                   help="train on every judgment (default: one item per distinct audio pair with the soft "
                        "label P(different) over its judgments: the same expected BCE, ~10x fewer forwards)")
    return p.parse_args(argv)


def aggregate(pairs):
    """One row per distinct (ref_audio, test_audio): label = share of "different" answers."""
    return (pairs.groupby(["ref_audio", "test_audio", "reference"], sort=True)
            .agg(label=("label", "mean"), participant=("participant", "first"), source=("source", "first"))
            .reset_index()[list(pairs.columns)])


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import numpy as np
    import pandas as pd
    import torch

    from analysis.agreement import AudioCache, agreement, agreement_table
    from analysis.baselines import learned_metric, make_baselines, parse_names
    from model.data import pairs_from_database, split_by_reference
    from model.trainer import TrainConfig, train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    read = pairs_from_database(args.db, experiment=args.experiment)
    print(f"judgments from {read.database_url}: {len(read.pairs)} main-trial pairs, {read.trained_on} listeners")
    print(read.screening_summary())
    train_pairs, test_pairs = split_by_reference(read.pairs, args.test_fraction, args.seed)
    test_refs = sorted(test_pairs["reference"].unique())
    train_refs = sorted(train_pairs["reference"].unique())
    assert set(test_refs).isdisjoint(train_refs)
    print(f"training references ({len(train_refs)}): {len(train_pairs)} judgments; "
          f"held-out references ({len(test_refs)}): {len(test_pairs)} judgments")

    started = time.perf_counter()
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    else:
        cfg = TrainConfig(regime=args.regime, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          segment_s=args.segment_s, val_fraction=args.val_fraction, seed=args.seed,
                          patience=args.patience, init_checkpoint=args.init_checkpoint,
                          pretext_epochs=args.pretext_epochs, pretext_clips=args.pretext_clips,
                          model={"normalize_features": args.normalize_features}, progress=False)
        items = train_pairs if args.per_judgment else aggregate(train_pairs)
        print(f"training items: {len(items)}" + ("" if args.per_judgment else " distinct pairs with soft labels "
              "(the trainer's val ROC-AUC/accuracy treat any P(different) > 0 as 'different'; val BCE is exact)"))
        summary = train(items, out / "model", cfg, read.trained_on)
        ckpt = out / "model" / "best.pt"
        for h in summary["history"]:
            print(f"  epoch {h['epoch']}: train BCE {h['train_bce']:.4f}, val ROC-AUC "
                  f"{h.get('val_roc_auc', float('nan')):.4f}, val BCE {h.get('val_bce', float('nan')):.4f} "
                  f"({h['seconds']:.0f} s)")
    train_s = time.perf_counter() - started

    table = read.table
    held_out = table[table["reference"].isin(test_refs)].reset_index(drop=True)
    assert len(held_out) == len(test_pairs)
    fns, skipped = make_baselines(parse_names(args.baselines))
    fns = {"learned (DPAM, jndlab)": learned_metric(ckpt), **fns}
    cache, results, seconds = AudioCache(), [], {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        results.append(agreement(held_out, fn, n_folds=args.n_folds, rng=np.random.default_rng(args.seed),
                                 name=name, cache=cache))
        seconds[name] = time.perf_counter() - t0
        r = results[-1]
        print(f"  {name:24s} AUC {r.roc_auc:.4f}  CV acc {r.cv_accuracy:.4f}  Spearman {r.spearman_rho:.4f} "
              f"({seconds[name]:.0f} s)", flush=True)
    df = agreement_table(results)
    df["seconds"] = [seconds[n] for n in df["metric"]]
    df.to_csv(out / "agreement.csv", index=False)
    best_baseline = df.iloc[1:].sort_values("roc_auc", ascending=False).iloc[0]
    learned = df.iloc[0]
    cols = ["metric", "roc_auc", "cv_accuracy", "spearman_rho", "brier", "n_pairs", "n_failed_pairs"]
    lines = [
        f"# Metric agreement on held-out references ({read.trained_on} listeners)", "",
        f"database: {read.database_url}; judgments kept after screening: {len(read.pairs)} "
        f"({len(read.excluded)} of {len(read.screening)} workers excluded)",
        f"training references: {len(train_refs)} ({len(train_pairs)} judgments); held-out: {len(test_refs)} "
        f"({len(held_out)} judgments, majority-class accuracy {learned['majority_accuracy']:.4f})",
        f"checkpoint: {ckpt} (training {train_s:.0f} s); args: {json.dumps(vars(args))}", "",
        "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
    ]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{getattr(r, c):.4f}" if isinstance(getattr(r, c), float) else str(getattr(r, c))
                                       for c in cols) + " |")
    verdict = "at least" if learned["roc_auc"] >= best_baseline["roc_auc"] else "BELOW"
    lines += ["", f"learned ROC-AUC {learned['roc_auc']:.4f} is {verdict} the best baseline "
              f"({best_baseline['metric']}, {best_baseline['roc_auc']:.4f})."]
    if skipped:
        lines += ["", "skipped baselines: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    (out / "agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
