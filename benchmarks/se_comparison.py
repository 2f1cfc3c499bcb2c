"""DPAM's claim, tested: the same enhancer trained with (a) L1, (b) DPAM + L1, (c) MR-STFT + L1.

    .venv/bin/python benchmarks/se_comparison.py                    # the demo corpus; resumable
    .venv/bin/python benchmarks/se_comparison.py --quick            # smoke run (< 1 min, temp folder)
    .venv/bin/python benchmarks/se_comparison.py --clean-dir VCTK/clean_trainset_28spk_wav \\
        --noisy-dir VCTK/noisy_trainset_28spk_wav --test-dir VCTK --steps 20000   # Valentini layout

Stages, each with the public commands (``python -m se ...``) and skipped when its
outputs are already there (rerun to resume, also mid-training; ``--force`` starts over):

1. The metric: DPAM's published scratch metric (``model.load_metric("dpam")``, trained on
   human JND judgments), snapshotted into OUT/metric.pt with its sha256 and provenance.
2. The held-out set. Demo corpus (``--corpus``): real recorded speech only (the corpus's
   ``ps_*`` clips, pocketsphinx recordings), split by source recording so no recording
   has clips on both sides; each held-out clip is mixed ``--mixtures-per-clip`` times with
   babble or a coloured noise (``--noise-dir``) at an SNR drawn from ``--snr-db``
   (``se.data.write_heldout``). Training synthesises mixtures from the other clips
   (``se train --heldout`` leaves the held-out clips out). Valentini layout
   (``--clean-dir/--noisy-dir``): training on those pairs and testing on ``--test-dir``
   (``clean_testset_wav`` + ``noisy_testset_wav``).
3. ``se train`` three times, identical but for ``--loss``: the same network config, seed
   (same initial weights), data order and synthesis (same batches), steps, batch,
   segment and lr. The runs go in parallel, one thread each. No checkpoint selection on
   the test set: each system is its ``last.pt``.
4. ``se evaluate`` of (a), (b), (c) and of DPAM's published SE model (``dpam-se``) on the
   held-out set, each file in one pass: PESQ (wb), STOI, SI-SDR and the DPAM distance;
   then CDPAM and ViSQOL (``analysis.baselines``) of the noisy input and every system.
5. Statistics: each system's mean with a 95% bootstrap interval, and per-file paired
   differences (b) − (a), (c) − (a), (b) − (c) and system − noisy input with 95% bootstrap
   intervals. Mixtures of one clean clip are not independent, so the bootstrap resamples
   clean clips (clusters) with all their mixtures.
6. The A/B preference test of (a) vs (b) through the web app, alongside the CDPAM/ViSQOL scores
   (``--jobs`` systems at once) (``se ab-test --simulate``:
   loudness-matched stimulus set, A/B experiment in SQLite, simulated listeners over
   HTTP with bad workers, screening, preference report); the share of (b) with its
   Clopper-Pearson and listener-bootstrap intervals.
7. The table: printed and written to RESULTS/NAME.{md,json}.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SYSTEMS = (("a", "l1:1", "(a) L1"), ("b", "metric:1,l1:1", "(b) DPAM + L1"), ("c", "mrstft:1,l1:1", "(c) MR-STFT + L1"))
PUBLISHED = ("dpam_se", "dpam-se", "DPAM's published SE model")
# (key, label, better, digits)
MEASURES = (
    ("pesq", "PESQ (wb)", "higher", 3),
    ("stoi", "STOI", "higher", 3),
    ("si_sdr_db", "SI-SDR (dB)", "higher", 2),
    ("metric", "DPAM distance", "lower", 4),
    ("cdpam", "CDPAM", "lower", 4),
    ("visqol", "ViSQOL (MOS)", "higher", 3),
)
N_BOOT = 10000


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Runner:
    """Runs ``python -m se ARGS``: in subprocesses (parallel) or, with --quick, in this process."""

    def __init__(self, out: Path, in_process: bool, threads_per_run: int | None):
        self.out, self.in_process, self.threads = out, in_process, threads_per_run
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str]) -> None:
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print("$ python -m se", " ".join(shlex.quote(a) for a in argv), f"> {log}", flush=True)
        if self.in_process:
            from se.__main__ import main as se_main

            if se_main(argv) != 0:
                sys.exit(f"failed: {name} (python -m se {' '.join(argv)})")
            return
        env = dict(os.environ)
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
            self.procs.append(
                (
                    name,
                    subprocess.Popen(
                        [sys.executable, "-m", "se", *argv], cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT
                    ),
                    log,
                )
            )

    def wait(self) -> None:
        failed = [f"{n} (exit {p.wait()}; see {log})" for n, p, log in self.procs if p.wait() != 0]
        self.procs = []
        if failed:
            sys.exit("failed: " + ", ".join(failed))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/se_comparison", help="work folder (runs, held-out set, evaluations)")
    p.add_argument("--results", default="benchmarks/results", help="where NAME.{md,json} go")
    p.add_argument("--name", default="se_comparison")
    p.add_argument(
        "--metric",
        default="dpam",
        help="metric of (b)'s loss and of the DPAM-distance score "
        "(default: dpam, the published human-trained scratch metric)",
    )
    p.add_argument("--corpus", default="data/speech", help="demo layout: clean clips (training + held-out)")
    p.add_argument("--noise-dir", default="data/noise", help="demo layout: noise files (babble, coloured noises)")
    p.add_argument("--clean-dir", help="Valentini layout: clean training clips (e.g. clean_trainset_28spk_wav)")
    p.add_argument("--noisy-dir", help="Valentini layout: noisy training clips of the same names")
    p.add_argument(
        "--test-dir",
        help="Valentini layout: folder holding clean_testset_wav + noisy_testset_wav "
        "(default: the parent of --clean-dir)",
    )
    p.add_argument("--snr-db", default="-5,20")
    p.add_argument(
        "--heldout-recordings",
        type=float,
        default=0.5,
        help="demo layout: share of the recorded (ps_*) source recordings held out",
    )
    p.add_argument("--mixtures-per-clip", type=int, default=4)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--segment-s", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--eval-every",
        type=int,
        default=100,
        help="validate on the first 4 held-out files every N steps (the curve only: no checkpoint selection)",
    )
    p.add_argument("--network", default="can")
    p.add_argument("--network-config", default='{"n_layers": 13, "channels": 64, "residual": true}')
    p.add_argument("--device", default="cpu", help="training and evaluation device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per training run (the three run at once)")
    p.add_argument("--web-listeners", type=int, default=20, help="simulated participants of the web A/B test")
    p.add_argument("--web-items", type=int, default=12, help="held-out items each web participant judges")
    p.add_argument("--no-published", action="store_true", help="leave DPAM's published SE model out")
    p.add_argument("--skip", default="", help="comma list of scores to leave out: cdpam,visqol")
    p.add_argument(
        "--cdpam-mixtures",
        type=int,
        help="CDPAM on the first K mixtures of each clean clip only "
        "(default: every file; CDPAM is the slow score on CPU)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="CDPAM/ViSQOL: systems scored at once, one process each; the web A/B test runs alongside them",
    )
    p.add_argument(
        "--note",
        default="",
        help="free text written with the results (e.g. why this network size, "
        "the machine's load); shown under the setup in NAME.md",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: synthetic clips, a tiny network, 2 steps, in a temporary folder (results not written)",
    )
    p.add_argument("--force", action="store_true", help="delete OUT and start over")
    return p.parse_args(argv)


# -- the held-out set ------------------------------------------------------------------------------
def recorded_split(corpus: Path, share: float, seed: int) -> tuple[list[Path], list[str]]:
    """Held-out recorded clips (``ps_*``), chosen by source recording: (paths, clip ids)."""
    import numpy as np

    from perturbations.corpora import find_audio

    items = [i for i in find_audio(corpus, "auto") if Path(i.path).name.startswith("ps_")]
    if not items:
        raise SystemExit(f"{corpus}: no recorded clips (ps_*.wav); build the demo corpus (scripts/setup.sh)")

    def recording(name: str) -> str:  # ps_<source>_<start>s.wav: clips of one recording share <source>
        return name.rsplit("_", 2)[0]

    groups = sorted({recording(Path(i.path).stem) for i in items})
    order = np.random.default_rng([seed, 13]).permutation(len(groups))
    held_groups = {groups[k] for k in order[: max(1, round(share * len(groups)))]}
    held = [i for i in items if recording(Path(i.path).stem) in held_groups]
    return [Path(i.path) for i in held], [i.item_id for i in held]


def make_heldout(args, heldout: Path) -> None:
    from se.data import NoiseSpec, write_heldout

    paths, ids = recorded_split(Path(args.corpus), args.heldout_recordings, args.seed)
    low, high = (float(v) for v in args.snr_db.split(","))
    write_heldout(
        paths,
        ids,
        heldout,
        NoiseSpec((low, high), args.noise_dir),
        16000,
        args.seed,
        10.0,
        mixtures_per_clip=args.mixtures_per_clip,
    )


# -- extra scores ----------------------------------------------------------------------------------
def _mixture_index(name: str) -> int:
    from se.data import MIXTURE_SEPARATOR

    stem = Path(name).stem
    return int(stem.rsplit(MIXTURE_SEPARATOR, 1)[1]) if MIXTURE_SEPARATOR in stem else 0


def extra_scores(
    heldout: Path,
    folders: dict[str, Path],
    cache: Path,
    skip: set[str],
    cdpam_mixtures: int | None = None,
    jobs: int = 1,
) -> dict:
    """CDPAM and ViSQOL of every system's outputs (and the noisy input) against clean; cached per file.

    ``cdpam_mixtures``: CDPAM on the first k mixtures of each clean clip only (it takes ~11 s
    of CPU per 3 s pair here, 17x ViSQOL); None: every file. ``jobs`` > 1: that many systems
    at once, each in its own process (one thread) with its own cache file
    (``CACHE.SYSTEM.part``), merged into ``cache`` when it is done; the values do not depend on
    ``jobs``. Returns ``{"SYSTEM/FILE": {"cdpam": float, "visqol": float}}`` (ViSQOL as a MOS,
    higher is better; CDPAM a distance).
    """
    from perturbations.files import atomic_write_text

    scores = json.loads(cache.read_text()) if cache.is_file() else {}
    for part in sorted(cache.parent.glob(f"{cache.name}.*.part")):  # a run stopped mid-way
        scores.update(json.loads(part.read_text()))
    todo = {
        system: folder for system, folder in folders.items() if _missing(heldout, system, scores, skip, cdpam_mixtures)
    }
    work = [
        (
            heldout,
            system,
            folder,
            cache.with_name(f"{cache.name}.{system}.part"),
            {k: v for k, v in scores.items() if k.startswith(f"{system}/")},
            skip,
            cdpam_mixtures,
        )
        for system, folder in todo.items()
    ]
    if jobs > 1 and len(work) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        os.environ.setdefault("MKL_NUM_THREADS", "1")
        with ProcessPoolExecutor(min(jobs, len(work)), mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_score_system, work))
    else:
        results = [_score_system(item) for item in work]
    for rows in results:
        scores.update(rows)
    atomic_write_text(cache, json.dumps(scores))
    for item in work:
        item[3].unlink(missing_ok=True)
    return scores


def _wanted(skip: set[str]) -> list[str]:
    return [n for n in ("cdpam", "visqol") if n not in skip]


def _names_for(name: str, wanted: list[str], cdpam_mixtures: int | None) -> list[str]:
    return [n for n in wanted if n != "cdpam" or cdpam_mixtures is None or _mixture_index(name) < cdpam_mixtures]


def _missing(heldout: Path, system: str, scores: dict, skip: set[str], cdpam_mixtures: int | None) -> bool:
    from se.data import find_pair_dirs, match_pairs

    wanted = _wanted(skip)
    return any(
        not all(n in scores.get(f"{system}/{pair.name}", {}) for n in _names_for(pair.name, wanted, cdpam_mixtures))
        for pair in match_pairs(*find_pair_dirs(heldout, "test"))
    )


def _score_system(item: tuple) -> dict:
    """One system's CDPAM/ViSQOL rows (``extra_scores``' worker), written to its own cache as it goes."""
    heldout, system, folder, part, rows, skip, cdpam_mixtures = item
    import torch

    from analysis.baselines import make_baselines
    from perturbations.files import atomic_write_text
    from se.data import find_pair_dirs, match_pairs
    from se.enhance import read_any

    torch.set_num_threads(1)
    fns, notes = make_baselines(_wanted(skip))
    for note in notes:
        print(f"note: {note}", flush=True)
    rows = dict(rows)
    for pair in match_pairs(*find_pair_dirs(heldout, "test")):
        key = f"{system}/{pair.name}"
        row = rows.setdefault(key, {})
        names = _names_for(pair.name, list(fns), cdpam_mixtures)
        if all(n in row for n in names):
            continue
        clean, rate, _ = read_any(pair.clean)
        est, _, _ = read_any(Path(folder) / pair.name)
        for name, fn in fns.items():
            if name not in row and name in names:
                value = float(fn(clean, est, rate))
                row[name] = -value if name == "visqol" else value  # baselines negate quality scores
        atomic_write_text(part, json.dumps(rows))
    return rows


# -- statistics ------------------------------------------------------------------------------------
def cluster_bootstrap(values, clusters, *, seed: int, n_boot: int = N_BOOT) -> dict:
    """Mean of ``values`` with a 95% percentile interval, resampling clusters (clean clips)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    c = np.asarray(clusters)
    keep = np.isfinite(v)
    v, c = v[keep], c[keep]
    if len(v) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "n": 0, "clusters": 0}
    names = sorted(set(c.tolist()))
    sums = np.array([v[c == k].sum() for k in names])
    counts = np.array([(c == k).sum() for k in names])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n_boot, len(names)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5]) if len(names) > 1 else (math.nan, math.nan)
    return {
        "mean": float(v.mean()),
        "ci_low": None if math.isnan(low) else float(low),
        "ci_high": None if math.isnan(high) else float(high),
        "n": len(v),
        "clusters": len(names),
    }


def load_per_file(out: Path, tags: list[str], extra: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{system: {file: {measure: value}}}`` with "noisy" as a system of its own."""
    table: dict[str, dict[str, dict[str, float]]] = {"noisy": {}}
    for tag in tags:
        table[tag] = {}
        with open(out / f"eval_{tag}" / "per_file.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                for system, suffix in ((tag, "enhanced"), ("noisy", "noisy")):
                    entry = table[system].setdefault(row["file"], {})
                    for key, *_ in MEASURES:
                        value = row.get(f"{key}_{suffix}")
                        if value not in (None, "") and key not in entry:
                            entry[key] = float(value)
    for key, row in extra.items():
        system, name = key.split("/", 1)
        if system in table and name in table[system]:
            table[system][name].update(row)
    return table


def statistics(table: dict, clusters: dict[str, str], seed: int) -> dict:
    """Per-system means and paired differences with cluster-bootstrap CIs.

    Each measure uses the files on which every system has a finite value (e.g. CDPAM with
    ``--cdpam-mixtures``, or PESQ where it refused a file), so the rows compare like with like.
    """
    import numpy as np

    common = {}
    for key, *_ in MEASURES:
        sets = [{n for n, row in files.items() if np.isfinite(row.get(key, math.nan))} for files in table.values()]
        common[key] = sorted(set.intersection(*sets)) if sets else []
    systems = {}
    for system, files in table.items():
        systems[system] = {
            key: cluster_bootstrap([files[n][key] for n in common[key]], [clusters[n] for n in common[key]], seed=seed)
            for key, *_ in MEASURES
        }
    contrasts = [("b", "a"), ("c", "a"), ("b", "c")] + [(s, "noisy") for s in table if s != "noisy"]
    paired = {}
    for x, y in contrasts:
        if x not in table or y not in table:
            continue
        entry = {}
        for key, _, better, _ in MEASURES:
            names = common[key]
            diffs = [table[x][n].get(key, math.nan) - table[y][n].get(key, math.nan) for n in names]
            stats = cluster_bootstrap(diffs, [clusters[n] for n in names], seed=seed)
            finite = [d for d in diffs if math.isfinite(d)]
            stats["x_better_files"] = int(sum(1 for d in finite if (d > 0 if better == "higher" else d < 0)))
            entry[key] = stats
        paired[f"{x}-{y}"] = entry
    return {"systems": systems, "paired": paired}


# -- the run ---------------------------------------------------------------------------------------
def quick_inputs(tmp: Path) -> dict:
    """A tiny corpus of harmonic 'ps_' clips (two recordings) and noise files, in ``tmp``."""
    import numpy as np

    from perturbations.audio import save_audio
    from perturbations.noises import colored_noise

    rng = np.random.default_rng(0)
    sr = 16000
    for k in range(4):
        t = np.arange(int(0.8 * sr)) / sr
        f0 = rng.uniform(100, 220)
        x = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 8))
        x *= 1 + 0.6 * np.sin(2 * np.pi * rng.uniform(2, 5) * t)
        save_audio(tmp / "speech" / f"ps_rec{k // 2}_{k:02d}_00s.wav", (0.05 * x).astype(np.float32), sr)
    for colour in ("white", "pink"):
        save_audio(tmp / "noise" / f"{colour}.wav", 0.1 * colored_noise(colour, sr, rng, sample_rate=sr), sr)
    return {"corpus": str(tmp / "speech"), "noise_dir": str(tmp / "noise")}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)
    started = time.perf_counter()
    tmp_holder = None
    if args.quick:
        tmp_holder = tempfile.TemporaryDirectory(prefix="se_comparison_quick_")
        tmp = Path(tmp_holder.name)
        for key, value in quick_inputs(tmp).items():
            setattr(args, key, value)
        args.out, args.results = str(tmp / "out"), str(tmp / "results")
        args.steps, args.batch_size, args.segment_s, args.eval_every = 2, 2, 0.25, 2
        args.network_config = '{"n_layers": 3, "channels": 4, "residual": true}'
        args.mixtures_per_clip, args.web_listeners, args.web_items = 2, 2, 2
        args.skip = "visqol,cdpam"
        args.no_published = True  # the full DPAM SE network takes ~1 s per clip on one core
    try:
        return run(args, started)
    finally:
        if tmp_holder is not None:
            tmp_holder.cleanup()


def run(args, started: float) -> int:
    import torch

    py_threads = max(1, args.threads)
    torch.set_num_threads(py_threads)
    out = Path(args.out)
    if args.force and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings_file = out / "timings.json"
    timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    runner = Runner(out, in_process=args.quick, threads_per_run=args.threads)
    network_config = json.loads(args.network_config)
    valentini = bool(args.clean_dir or args.noisy_dir)
    if valentini and not (args.clean_dir and args.noisy_dir):
        sys.exit("the Valentini layout needs both --clean-dir and --noisy-dir")

    # 1. the metric, snapshotted
    from model import load_metric

    metric = out / "metric.pt"
    if not metric.is_file():
        try:
            from model import metric_path

            source = Path(metric_path(args.metric))
        except ImportError:
            source = Path(args.metric)
        if not source.is_file():
            sys.exit(f"{args.metric}: no such metric (model.load_metric name or checkpoint path)")
        shutil.copyfile(source, metric)
        (out / "metric_source.txt").write_text(f"{args.metric}\n{source.resolve()}\n{sha256(source)}\n")
    m = load_metric(metric, device="cpu")
    metric_info = {
        "name": args.metric,
        "sha256": sha256(metric),
        "trained_on": m.trained_on,
        "perceptual_validity": m.perceptual_validity,
        "variant": getattr(m, "variant", None),
        "provenance": getattr(m, "provenance", {}),
    }
    del m
    print(f"metric: {args.metric} (trained_on={metric_info['trained_on']})", flush=True)

    # 2. the held-out set
    if valentini:
        heldout = Path(args.test_dir or Path(args.clean_dir).resolve().parent)
    else:
        heldout = out / "heldout"
        if not (heldout / "heldout.csv").is_file():
            t = time.perf_counter()
            make_heldout(args, heldout)
            timings["make_heldout_s"] = time.perf_counter() - t

    # 3. training
    data = (
        ["--clean", args.clean_dir, "--noisy", args.noisy_dir]
        if valentini
        else [
            "--clean",
            args.corpus,
            "--noise-dir",
            args.noise_dir,
            "--heldout",
            str(heldout),
            f"--snr-db={args.snr_db}",
        ]
    )
    common = [
        *data,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--segment-s",
        str(args.segment_s),
        "--lr",
        str(args.lr),
        "--seed",
        str(args.seed),
        "--network",
        args.network,
        "--network-config",
        json.dumps(network_config),
        "--sample-every",
        str(args.steps),
        "--eval-every",
        str(min(args.eval_every, args.steps)),
        "--val-files",
        "4",
        "--no-progress",
        "--metric",
        str(metric),
    ]  # (a) and (c) only score validation with it

    def trained(tag: str) -> bool:
        last = out / tag / "last.pt"
        if not last.is_file():
            return False
        state = torch.load(last, map_location="cpu", weights_only=True).get("trainer_state") or {}
        return int(state.get("step", 0)) >= args.steps

    t = time.perf_counter()
    todo = [(tag, loss) for tag, loss, _ in SYSTEMS if not trained(tag)]
    for tag, loss in todo:
        runner.start(
            f"train_{tag}",
            [
                "train",
                "--out",
                str(out / tag),
                "--loss",
                loss,
                *common,
                *(["--no-amp"] if args.device == "cpu" else []),
            ],
        )
    runner.wait()
    if todo:
        timings["train_wall_s"] = timings.get("train_wall_s", 0.0) + time.perf_counter() - t

    # 4. evaluation: (a)-(c) and DPAM's published model, every file in one pass
    systems = [(tag, str(out / tag / "last.pt"), label) for tag, _, label in SYSTEMS]
    if not args.no_published:
        systems.append(PUBLISHED)
    t = time.perf_counter()
    done_any = False
    for tag, ckpt, _ in systems:
        if (out / f"eval_{tag}" / "summary.json").is_file():
            continue
        done_any = True
        runner.start(
            f"evaluate_{tag}",
            [
                "evaluate",
                "--checkpoint",
                ckpt,
                "--data",
                str(heldout),
                "--metric",
                str(metric),
                "--workers",
                "0",
                "--out",
                str(out / f"eval_{tag}"),
                "--device",
                args.device,
                "--no-progress",
            ],
        )
    runner.wait()
    if done_any:
        timings["evaluate_wall_s"] = time.perf_counter() - t
    from se.data import find_pair_dirs

    noisy_dir, _ = find_pair_dirs(heldout, "test")
    folders = {"noisy": noisy_dir, **{tag: out / f"eval_{tag}" / "enhanced" for tag, _, _ in systems}}

    # 6. the A/B test in the web app: a subprocess, alongside the CDPAM/ViSQOL scores
    web = out / "ab_web"
    web_started = None
    if not (web / "report" / "preference.json").is_file():
        web_started = time.perf_counter()
        if web.exists():
            shutil.rmtree(web)  # a half-made run: its database would refuse a second experiment
        web.mkdir(parents=True)
        runner.start(
            "ab_web",
            [
                "ab-test",
                "--heldout",
                str(heldout),
                "--system",
                f"l1={folders['a']}",
                "--system",
                f"dpam_l1={folders['b']}",
                "--out",
                str(web / "set"),
                "--name",
                "se-comparison",
                "--database-url",
                f"sqlite:///{web.resolve() / 'ab.sqlite'}",
                "--items-per-participant",
                str(args.web_items),
                "--catch-rate",
                "0.2",
                "--simulate",
                str(args.web_listeners),
                "--bad-workers",
                "0.1",
                "--seed",
                str(args.seed),
                "--report",
                str(web / "report"),
            ],
        )
    t = time.perf_counter()
    extra = extra_scores(
        heldout,
        folders,
        out / "extra_scores.json",
        {s for s in args.skip.split(",") if s},
        args.cdpam_mixtures,
        jobs=args.jobs,
    )
    timings["extra_scores_s"] = timings.get("extra_scores_s", 0.0) + time.perf_counter() - t
    runner.wait()
    if web_started is not None:
        timings["ab_web_s"] = time.perf_counter() - web_started
    ab = ab_share(json.loads((web / "report" / "preference.json").read_text()), "dpam_l1", "l1")
    timings_file.write_text(json.dumps(timings, indent=2))

    # 5. statistics, clustered by clean clip
    from se.data import read_heldout_csv

    held = read_heldout_csv(heldout)
    tags = [tag for tag, _, _ in systems]
    table = load_per_file(out, tags, extra)
    clusters = {name: (held.get(name, {}).get("clean_id") or Path(name).stem) for name in table["noisy"]}
    stats = statistics(table, clusters, args.seed)

    # 7. the table
    result = build_result(
        args,
        out,
        heldout,
        held,
        metric_info,
        network_config,
        systems,
        stats,
        ab,
        timings,
        time.perf_counter() - started,
    )
    markdown = render_markdown(result)
    print(markdown)
    if not args.quick:
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        (results / f"{args.name}.json").write_text(json.dumps(result, indent=2))
        (results / f"{args.name}.md").write_text(markdown)
        print(f"written: {results / (args.name + '.md')}, {results / (args.name + '.json')}")
    return 0


def ab_share(report: dict, system: str, other: str) -> dict:
    """The share of ``system`` over ``other`` from a preference report (its pairs name the pooled winner)."""
    pair = next((p for p in report["pairs"] if {p["system"], p["other"]} == {system, other}), None)
    if pair is None:
        return {"n": 0, "summary": "no A/B judgments"}
    flip = pair["system"] != system

    def oriented(entry: dict) -> dict:
        keys = ("share", "ci_low", "ci_high")
        if entry is None or entry.get("share") is None:
            return {k: None for k in keys}
        values = {k: entry.get(k) for k in keys}
        if flip:
            values = {
                "share": 1 - values["share"],
                "ci_low": None if values["ci_high"] is None else 1 - values["ci_high"],
                "ci_high": None if values["ci_low"] is None else 1 - values["ci_low"],
            }
        return {**values, **{k: entry[k] for k in ("wins", "n", "ties", "p_value") if k in entry}}

    pooled = oriented(pair["pooled"])
    if flip and "wins" in pooled:
        pooled["wins"] = pooled["n"] - pooled["wins"]
    return {
        "system": system,
        "other": other,
        "pooled": pooled,
        "listener_bootstrap": oriented(pair.get("listener_bootstrap")),
        "n_items": pair["n_items"],
        "n_listeners": pair["n_listeners"],
        "summary": pair["summary"],
        "n_main_judgments": report.get("n_main_judgments"),
        "n_main_judgments_included": report.get("n_main_judgments_included"),
        "workers": {k: report.get("workers", {}).get(k) for k in ("n", "n_excluded")},
    }


def build_result(args, out, heldout, held, metric_info, network_config, systems, stats, ab, timings, total_s):
    from se.networks import build_network, count_parameters

    training = {}
    for tag, loss, _ in SYSTEMS:
        hist = json.loads((out / tag / "history.json").read_text())["entries"]
        state = torch_state(out / tag / "last.pt")
        training[tag] = {
            "loss": loss,
            "steps": int(state.get("step", 0)),
            "train_seconds": float(sum(h.get("seconds", 0.0) for h in hist)),
            "curve": [
                {
                    k: h[k]
                    for k in (
                        "step",
                        "train_loss",
                        "train_loss_l1",
                        "train_loss_metric",
                        "train_loss_mrstft",
                        "val_si_sdr_db",
                        "val_si_sdr_db_noisy",
                        "val_metric",
                    )
                    if k in h
                }
                for h in hist
            ],
        }
    net = build_network(args.network, **network_config)
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = bool(
        subprocess.run(
            ["git", "status", "--porcelain", "--", "se", "benchmarks"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )
    return {
        "note": args.note,
        "command": ("python benchmarks/se_comparison.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])).strip(),
        "code_version": f"git:{git}{'-dirty' if dirty else ''}",
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "device": args.device,
            "threads_per_run": args.threads,
        },
        "setup": {
            "network": args.network,
            "network_config": network_config,
            "parameters": count_parameters(net),
            "steps": args.steps,
            "batch_size": args.batch_size,
            "segment_s": args.segment_s,
            "lr": args.lr,
            "seed": args.seed,
            "optimizer": "Adam",
            "snr_db": args.snr_db,
            "checkpoint_used": "last.pt (no selection on the held-out set)",
            "data": "valentini" if args.clean_dir else "demo corpus",
        },
        "heldout": {
            "folder": str(heldout),
            "items": len(held) or None,
            "clean_clips": len({r.get("clean_id") for r in held.values()}) if held else None,
            "mixtures_per_clip": args.mixtures_per_clip if held else None,
            "noise_types": sorted({r["noise_type"] for r in held.values()}) if held else None,
            "snr_db_range": [
                min(float(r["snr_db"]) for r in held.values()),
                max(float(r["snr_db"]) for r in held.values()),
            ]
            if held
            else None,
            "clips": sorted({r.get("clean_id") for r in held.values()}) if held else None,
        },
        "metric": metric_info,
        "systems": [{"tag": t, "label": label, "checkpoint": c} for t, c, label in systems],
        "stats": stats,
        "training": training,
        "ab_web": ab,
        "timings_s": {**timings, "this_invocation": total_s},
    }


def torch_state(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True).get("trainer_state") or {}


def _ci(entry: dict | None, digits: int) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    if entry.get("ci_low") is None:
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} [{entry['ci_low']:.{digits}f}, {entry['ci_high']:.{digits}f}]"


def render_markdown(r: dict) -> str:
    s, h, m, st, ab = r["setup"], r["heldout"], r["metric"], r["stats"], r["ab_web"]
    labels = {"noisy": "noisy input", **{x["tag"]: x["label"] for x in r["systems"]}}
    steps = ", ".join(f"({t}) {v['steps']}" for t, v in r["training"].items())
    lines = [
        "# Speech enhancement: L1 vs DPAM + L1 vs MR-STFT + L1",
        "",
        (
            f"Command: `{r['command']}` ({r['code_version']}, {r['host']['device']}, {r['host']['cpus']} CPUs; "
            f"training wall clock, the three runs at once with {r['host']['threads_per_run']} thread each: "
            + ", ".join(f"({t}) {v['train_seconds']:.0f} s" for t, v in r["training"].items())
            + ")."
        ),
        "",
        (
            f"Network: {s['network']} {json.dumps(s['network_config'])}, {s['parameters']:,} parameters. All three: "
            f"seed {s['seed']} (same initial weights), same batches, Adam steps: {steps}, batch {s['batch_size']} × "
            f"{s['segment_s']} s, lr {s['lr']}; each evaluated at its last step."
        ),
        "",
        *([f"Note: {r['note']}", ""] if r.get("note") else []),
        (
            f"Held-out set: {h['items']} noisy/clean pairs = {h['clean_clips']} real recorded clips never trained "
            f"on ({', '.join(h['clips'] or [])}) × {h['mixtures_per_clip']} mixtures with "
            f"{', '.join(h['noise_types'] or [])} at {h['snr_db_range'][0]:.1f} … {h['snr_db_range'][1]:.1f} dB SNR."
            if h.get("items")
            else f"Held-out set: `{h['folder']}`."
        ),
        "",
        (
            f"Metric of (b) and of the DPAM distance: `{m['name']}` (trained_on = {m['trained_on']}, variant "
            f"{m.get('variant')}; sha256 {m['sha256'][:12]}…). CDPAM and ViSQOL are independent of it."
        ),
        "",
        "Mean over held-out files [95% bootstrap CI, clean clips resampled]:",
        "",
        "| system | "
        + " | ".join(f"{label} {'↑' if better == 'higher' else '↓'}" for _, label, better, _ in MEASURES)
        + " |",
        "|---|" + "---|" * len(MEASURES),
    ]
    for tag, values in st["systems"].items():
        lines.append(
            f"| {labels.get(tag, tag)} | " + " | ".join(_ci(values.get(key), d) for key, _, _, d in MEASURES) + " |"
        )
    lines += [
        "",
        "Paired per-file differences, mean [95% bootstrap CI] (files where the first is better / n):",
        "",
        "| contrast | " + " | ".join(label for _, label, _, _ in MEASURES) + " |",
        "|---|" + "---|" * len(MEASURES),
    ]
    for contrast, values in st["paired"].items():
        x, y = contrast.split("-", 1)
        cells = [
            f"{_ci(values[key], d)} ({values[key]['x_better_files']}/{values[key]['n']})"
            if values[key].get("mean") is not None
            else "n/a"
            for key, _, _, d in MEASURES
        ]
        lines.append(f"| {labels.get(x, x)} − {labels.get(y, y)} | " + " | ".join(cells) + " |")
    p = ab.get("pooled") or {}
    lb = ab.get("listener_bootstrap") or {}
    lines += ["", "## A/B preference test through the web app (simulated listeners)", ""]
    if p.get("share") is not None:
        lines += [
            f"`python -m se ab-test --simulate`: {ab['n_listeners']} listeners kept of {ab['workers']['n']} "
            f"({ab['workers']['n_excluded']} excluded by screening), {ab['n_items']} items; (b) DPAM + L1 "
            f"preferred over (a) L1 in {p.get('wins')}/{p.get('n')} judgments: share **{p['share']:.3f}**, 95% "
            f"Clopper-Pearson CI [{p['ci_low']:.3f}, {p['ci_high']:.3f}], p = {p.get('p_value', float('nan')):.3g}"
            + (
                f"; listener bootstrap [{lb['ci_low']:.3f}, {lb['ci_high']:.3f}]"
                if lb.get("ci_low") is not None
                else ""
            )
            + ".",
            "",
            f"Report summary: {ab['summary']}",
        ]
    else:
        lines.append("No A/B judgments.")
    lines += [
        "",
        "## Training curves",
        "",
        "| system | step | train loss | val SI-SDR (dB; noisy input) | val DPAM distance |",
        "|---|---|---|---|---|",
    ]
    for tag, t in r["training"].items():
        for c in t["curve"]:
            lines.append(
                f"| ({tag}) | {c.get('step')} | {c.get('train_loss', float('nan')):.4f} | "
                f"{c.get('val_si_sdr_db', float('nan')):.2f} ({c.get('val_si_sdr_db_noisy', float('nan')):.2f}) | "
                f"{c.get('val_metric', float('nan')):.4f} |"
            )
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r["timings_s"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
