"""Agreement with listeners on held-out references: jndlab's learned metric, DPAM's published
human-trained metrics and every classic baseline, with bootstrap CIs over references.

1. Judgments: the listening-test database at ``--db`` (default: the one the bigger
   pipeline run below writes), read and screened exactly as ``python -m model train
   --judgments db`` reads them (``model.data.pairs_from_database``: analysis.judgments ->
   analysis.screening default rules -> pairs_table).
2. References are split (``model.data.split_by_reference``, ``--test-fraction``, ``--seed``):
   the metric is trained (``model.trainer.train``) on the training references only; its own
   validation split for early stopping is again drawn from the training references.
3. The held-out references' judgments are scored with ``analysis.agreement.agreement`` for
   the learned metric (best.pt), the three shipped DPAM metrics (``model.load_metric``:
   ``dpam``, ``dpam-finetune``, ``dpam-linear``, trained on human JND judgments) and every
   baseline of ``analysis.baselines`` (ROC-AUC, accuracy at a threshold cross-validated over
   references, Spearman over pair conditions). The jndlab metrics reach ``analysis`` as plain
   distance callables built here (the analysis layer does not import ``model``).
4. Each ROC-AUC gets a 95 % percentile bootstrap interval: held-out references are drawn
   with replacement (``--n-boot`` times) and the AUC recomputed on their judgments, so the
   interval covers the between-clip variation that a per-judgment bootstrap would hide.

Data, once (about 7 minutes of simulation on 2 cores; steps 5-7 may be stopped):

    PIPELINE_OUT=out/agreement PIPELINE_CLIPS=12 PIPELINE_PARTICIPANTS=60 PIPELINE_SEED=1 scripts/pipeline.sh

Then:

    .venv/bin/python benchmarks/metric_agreement.py --out out/agreement/run2            # seed 0 split
    .venv/bin/python benchmarks/metric_agreement.py --out out/agreement/run2_seed1 --seed 1

(about 8 minutes of training each on 2 busy CPU cores; CDPAM alone takes ~13 minutes
to score the held-out pairs there, ``--baselines l1,l2,...`` leaves it out).

``--quick`` needs no database: it writes a tiny stimulus set (harmonic tones, four
perturbation families at four levels) to a temporary folder, has simulated listeners
(``listening_test.simulation``: population, auditory model, psychometric answers; no
server) judge every pair, trains the learned metric for one short epoch and scores it all
with the fast baselines. A smoke run, well under a minute of work.

writes ``agreement.csv``, ``agreement.md`` and the model folder under ``--out``; rerunning
with the same ``--out`` reuses a finished training run (the trainer resumes/returns).
Simulated listeners only: the table says nothing about human perception, except through
the DPAM rows, whose weights were trained on human judgments: their agreement with the
simulated listeners is a check of how human-like the simulator is.
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
    p.add_argument(
        "--dpam",
        default="dpam,dpam-finetune,dpam-linear",
        help="shipped DPAM metrics to score (comma list; 'none' to skip)",
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates over held-out references")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: builds its own tiny simulated-listener data (no database), 1 short epoch",
    )
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
    g.add_argument(
        "--per-judgment",
        action="store_true",
        help="train on every judgment (default: one item per distinct audio pair with the soft "
        "label P(different) over its judgments: the same expected BCE, ~10x fewer forwards)",
    )
    return p.parse_args(argv)


def aggregate(pairs):
    """One row per distinct (ref_audio, test_audio): label = share of "different" answers."""
    return (
        pairs.groupby(["ref_audio", "test_audio", "reference"], sort=True)
        .agg(label=("label", "mean"), participant=("participant", "first"), source=("source", "first"))
        .reset_index()[list(pairs.columns)]
    )


QUICK_FAMILIES = ("noise", "lowpass", "clipping")
QUICK_LEVELS = (15.0, 50.0, 85.0)
QUICK_RATE = 16000


def quick_judgments(folder: Path, seed: int = 0, n_refs: int = 6, seconds: float = 0.5, n_listeners: int = 4):
    """A tiny judged stimulus set without a server or database.

    ``n_refs`` harmonic AM tones, each perturbed by ``QUICK_FAMILIES`` at ``QUICK_LEVELS``
    (``perturbations.stimulus.make_stimulus``: loudness-matched, sample-aligned) plus an
    identical pair; ``n_listeners`` good simulated listeners (``make_population``) answer
    every pair from the auditory model's distance (``AuditoryModel.distance`` ->
    ``ListenerParams.pair_answer``), as the HTTP simulator's listeners would.
    Returns ``(pairs, table)``: the trainer's pair frame and the agreement table.
    """
    import numpy as np
    import pandas as pd

    from listening_test.simulation.auditory import AuditoryModel
    from listening_test.simulation.population import make_population
    from perturbations.audio import save_audio
    from perturbations.registry import get_family
    from perturbations.stimulus import make_stimulus

    rng = np.random.default_rng([seed, 2024])
    listeners = make_population(n_listeners, rng)
    ear = AuditoryModel()
    t = np.arange(int(seconds * QUICK_RATE)) / QUICK_RATE
    rows = []
    for r in range(n_refs):
        f0 = rng.uniform(100, 260)
        ref = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 9))
        ref = (0.1 * ref * (1 + 0.6 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))).astype(np.float32)
        ref_path = folder / f"ref{r}.wav"
        save_audio(ref_path, ref, QUICK_RATE)
        stimuli = [("reference", 0.0, ref, ref_path)]
        for family in QUICK_FAMILIES:
            for level in QUICK_LEVELS:
                audio, _ = make_stimulus(get_family(family), ref, QUICK_RATE, level, int(rng.integers(2**31)))
                path = folder / f"ref{r}_{family}_{int(level)}.wav"
                save_audio(path, audio, QUICK_RATE)
                stimuli.append((family, level, audio, path))
        for family, level, audio, path in stimuli:
            d = ear.distance(ref, audio, QUICK_RATE)
            for listener in listeners:
                answer = listener.pair_answer(
                    d, family if family != "reference" else None, np.random.default_rng([listener.seed, r, len(rows)])
                )
                rows.append(
                    {
                        "ref_audio": str(ref_path),
                        "test_audio": str(path),
                        "label": int(answer == "different"),
                        "participant": listener.worker_id,
                        "reference": f"ref{r}",
                        "family": family,
                        "level": level,
                        "source": f"quick:{len(rows)}",
                    }
                )
    table = pd.DataFrame(rows)
    pairs = table[["ref_audio", "test_audio", "label", "participant", "reference", "source"]].copy()
    return pairs, table


def metric_callable(name_or_path, label: str):
    """A jndlab metric (shipped name or checkpoint) as ``analysis``'s ``(ref, test, rate) -> float``."""
    import numpy as np
    import torch

    from model import load_metric

    metric = load_metric(name_or_path, device="cpu")

    def distance(ref, test, sample_rate: int) -> float:
        n = min(len(ref), len(test))
        a = torch.from_numpy(np.ascontiguousarray(ref[:n], dtype=np.float32))[None]
        b = torch.from_numpy(np.ascontiguousarray(test[:n], dtype=np.float32))[None]
        with torch.no_grad():
            return float(metric(a, b, sample_rate=int(sample_rate))[0])

    distance.__name__ = label
    distance.trained_on = metric.trained_on
    return distance


def bootstrap_auc(result, judgments, n_boot: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the ROC-AUC, resampling held-out references with replacement."""
    import numpy as np

    from analysis.agreement import roc_auc

    df = judgments.merge(result.pairs, on=["ref_audio", "test_audio"], how="inner")
    df = df[df["distance"].notna()]
    if df.empty or n_boot < 1:
        return float("nan"), float("nan")
    groups = [(g["distance"].to_numpy(float), g["label"].to_numpy(int)) for _, g in df.groupby("reference")]
    rng = np.random.default_rng([seed, 77])
    aucs = []
    for _ in range(n_boot):
        pick = rng.integers(len(groups), size=len(groups))
        d = np.concatenate([groups[i][0] for i in pick])
        y = np.concatenate([groups[i][1] for i in pick])
        aucs.append(roc_auc(d, y))
    aucs = np.asarray(aucs, float)
    aucs = aucs[np.isfinite(aucs)]
    if aucs.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import numpy as np
    import torch

    from analysis.agreement import AudioCache, agreement, agreement_table
    from analysis.baselines import make_baselines, parse_names
    from model.data import pairs_from_database, split_by_reference
    from model.trainer import TrainConfig, train

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        import os
        import tempfile

        data_dir = Path(tempfile.mkdtemp(prefix="agreement_quick_", dir=os.environ.get("JNDLAB_BENCH_TMP")))
        pairs, table = quick_judgments(data_dir, args.seed)
        source = f"quick: {len(pairs)} simulated judgments in {data_dir} (no database)"
        trained_on, n_excluded, n_workers = "simulated", 0, int(pairs["participant"].nunique())
        args.epochs, args.segment_s, args.patience, args.batch_size, args.threads = 1, 0.25, 0, 8, 1
        if args.baselines == "all":
            args.baselines = "l1,l2,logmel_l1,mrstft,sisdr"
        args.n_boot = min(args.n_boot, 200)
    else:
        read = pairs_from_database(args.db, experiment=args.experiment)
        print(read.screening_summary())
        pairs, table, trained_on = read.pairs, read.table, read.trained_on
        source = f"database: {read.database_url}"
        n_excluded, n_workers = len(read.excluded), len(read.screening)
    print(f"judgments: {source}: {len(pairs)} main-trial pairs, {trained_on} listeners")
    train_pairs, test_pairs = split_by_reference(pairs, args.test_fraction, args.seed)
    test_refs = sorted(test_pairs["reference"].unique())
    train_refs = sorted(train_pairs["reference"].unique())
    assert set(test_refs).isdisjoint(train_refs)
    print(
        f"training references ({len(train_refs)}): {len(train_pairs)} judgments; "
        f"held-out references ({len(test_refs)}): {len(test_pairs)} judgments"
    )

    started = time.perf_counter()
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    else:
        cfg = TrainConfig(
            regime=args.regime,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            segment_s=args.segment_s,
            val_fraction=args.val_fraction,
            seed=args.seed,
            patience=args.patience,
            init_checkpoint=args.init_checkpoint,
            pretext_epochs=args.pretext_epochs,
            pretext_clips=args.pretext_clips,
            model={"normalize_features": args.normalize_features},
            progress=False,
        )
        items = train_pairs if args.per_judgment else aggregate(train_pairs)
        print(
            f"training items: {len(items)}"
            + (
                ""
                if args.per_judgment
                else " distinct pairs with soft labels "
                "(the trainer's val ROC-AUC/accuracy treat any P(different) > 0 as 'different'; val BCE is exact)"
            )
        )
        summary = train(items, out / "model", cfg, trained_on)
        ckpt = out / "model" / "best.pt"
        for h in summary["history"]:
            print(
                f"  epoch {h['epoch']}: train BCE {h['train_bce']:.4f}, val ROC-AUC "
                f"{h.get('val_roc_auc', float('nan')):.4f}, val BCE {h.get('val_bce', float('nan')):.4f} "
                f"({h['seconds']:.0f} s)"
            )
    train_s = time.perf_counter() - started

    held_out = table[table["reference"].isin(test_refs)].reset_index(drop=True)
    assert len(held_out) == len(test_pairs)
    fns, skipped = make_baselines(parse_names(args.baselines))
    learned_name = f"learned (jndlab, {trained_on} listeners)"
    dpam = [n.strip() for n in args.dpam.split(",") if n.strip() and args.dpam != "none"]
    fns = {
        learned_name: metric_callable(ckpt, learned_name),
        **{f"{n} (published, human JND)": metric_callable(n, n) for n in dpam},
        **fns,
    }
    cache, results, seconds, cis = AudioCache(), [], {}, {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        results.append(
            agreement(held_out, fn, n_folds=args.n_folds, rng=np.random.default_rng(args.seed), name=name, cache=cache)
        )
        seconds[name] = time.perf_counter() - t0
        r = results[-1]
        cis[name] = bootstrap_auc(
            r, held_out[["ref_audio", "test_audio", "label", "reference"]], args.n_boot, args.seed
        )
        print(
            f"  {name:36s} AUC {r.roc_auc:.4f} [{cis[name][0]:.4f}, {cis[name][1]:.4f}]  CV acc "
            f"{r.cv_accuracy:.4f}  Spearman {r.spearman_rho:.4f} ({seconds[name]:.0f} s)",
            flush=True,
        )
    df = agreement_table(results)
    df.insert(df.columns.get_loc("roc_auc") + 1, "auc_ci_low", [cis[n][0] for n in df["metric"]])
    df.insert(df.columns.get_loc("auc_ci_low") + 1, "auc_ci_high", [cis[n][1] for n in df["metric"]])
    df["seconds"] = [seconds[n] for n in df["metric"]]
    df.to_csv(out / "agreement.csv", index=False)
    n_jndlab = 1 + len(dpam)
    best_baseline = df.iloc[n_jndlab:].sort_values("roc_auc", ascending=False).iloc[0] if len(df) > n_jndlab else None
    learned = df.iloc[0]
    cols = [
        "metric",
        "roc_auc",
        "auc_ci_low",
        "auc_ci_high",
        "cv_accuracy",
        "spearman_rho",
        "brier",
        "n_pairs",
        "n_failed_pairs",
    ]
    lines = [
        f"# Metric agreement on held-out references ({trained_on} listeners)",
        "",
        f"{source}; judgments kept after screening: {len(pairs)} ({n_excluded} of {n_workers} workers excluded)",
        (
            f"training references: {len(train_refs)} ({len(train_pairs)} judgments); held-out: {len(test_refs)} "
            f"({len(held_out)} judgments, majority-class accuracy {learned['majority_accuracy']:.4f})"
        ),
        f"checkpoint: {ckpt} (training {train_s:.0f} s); args: {json.dumps(vars(args))}",
        "",
        (
            f"ROC-AUC intervals: 95 % percentile bootstrap over the {len(test_refs)} held-out references "
            f"({args.n_boot} replicates)"
        ),
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in df.itertuples(index=False):
        lines.append(
            "| "
            + " | ".join(
                f"{getattr(r, c):.4f}" if isinstance(getattr(r, c), float) else str(getattr(r, c)) for c in cols
            )
            + " |"
        )
    if best_baseline is not None:
        verdict = "at least" if learned["roc_auc"] >= best_baseline["roc_auc"] else "BELOW"
        lines += [
            "",
            (
                f"learned ROC-AUC {learned['roc_auc']:.4f} is {verdict} the best baseline "
                f"({best_baseline['metric']}, {best_baseline['roc_auc']:.4f})."
            ),
        ]
    if dpam:
        rows = df.iloc[1:n_jndlab]
        best = rows.sort_values("roc_auc", ascending=False).iloc[0]
        lines += [
            "",
            (
                f"DPAM's human-trained metrics agree with these {trained_on} listeners at ROC-AUC "
                + ", ".join(f"{r.metric.split(' ')[0]} {r.roc_auc:.4f}" for r in rows.itertuples())
                + f" (best {best['metric'].split(' ')[0]}; the metric trained on these listeners: "
                f"{learned['roc_auc']:.4f}). Where a human-trained metric ranks the pairs as the simulated "
                "listeners do, the simulator's notion of a noticeable difference is human-like for these "
                "perturbations; a gap marks where the simulator and people differ (or where DPAM's "
                "training data did not reach)."
            ),
        ]
    if skipped:
        lines += ["", "skipped baselines: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    (out / "agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
