"""CPU throughput of the jndlab DPAM metrics beside CDPAM and PESQ, on the same clips.

    .venv/bin/python benchmarks/metric_speed.py [--clips 4] [--seconds 3] [--threads 1] [--quick]

Methods: ``jndlab`` (the network trained from scratch here, GroupNorm, 16 kHz; random
weights unless ``--checkpoint``: speed does not depend on them), ``dpam-port`` (the port of
DPAM's published human-trained metric, ``model.load_metric("dpam")``, called on the 16 kHz
clips with ``sample_rate=16000`` as a loss would be: resampling to 22.05 kHz included),
CDPAM and PESQ. ``--quick``: 1 clip of 0.5 s, 1 repeat, no CDPAM backward (a smoke run).

Throughput = seconds of audio scored per wall-clock second (a pair of 3 s clips counts
3 s), for inference and for forward+backward (gradient wrt the degraded clip; PESQ has
none). Each (method, mode) runs in its own subprocess so that its peak resident memory
(``resource.getrusage``, includes the Python + torch runtime) is its own.

CDPAM (pip ``cdpam``, weights inside its wheel) is run as its README says: 22.05 kHz
input scaled by 32768, ``dev='cpu'``; its ``torch.load`` needs ``weights_only=False``
(a trusted file from its own wheel). Absent packages are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 16000
REPO = Path(__file__).resolve().parents[1]
METHODS = (
    ("jndlab", "inference"),
    ("jndlab", "forward+backward"),
    ("dpam-port", "inference"),
    ("dpam-port", "forward+backward"),
    ("cdpam", "inference"),
    ("cdpam", "forward+backward"),
    ("pesq", "inference"),
)


def make_clips(n: int, seconds: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Speech (espeak-ng when installed, else harmonic tones) and a 10 dB pink-noise version."""
    sys.path.insert(0, str(REPO))
    from perturbations.noises import colored_noise

    rng = np.random.default_rng(seed)
    length = int(seconds * SR)
    refs = []
    for i in range(n):
        audio = _espeak(i) if shutil.which("espeak-ng") else None
        if audio is None or len(audio) < length:
            t = np.arange(length) / SR
            audio = sum(np.sin(2 * np.pi * (120 + 10 * i) * k * t) / k for k in range(1, 10))
        audio = np.asarray(audio[:length], np.float64)
        refs.append((0.05 * audio / np.sqrt(np.mean(audio**2))).astype(np.float32))
    refs = np.stack(refs)
    noise = np.stack([colored_noise("pink", length, rng, sample_rate=SR) for _ in range(n)])
    rms = np.sqrt(np.mean(refs**2, axis=1, keepdims=True))
    return refs, (refs + noise * rms * 10 ** (-10 / 20)).astype(np.float32)


def _espeak(i: int) -> np.ndarray | None:
    import soundfile as sf

    from perturbations.audio import resample

    text = [
        "The quick brown fox jumps over the lazy dog while seven pilots watch quietly.",
        "A perceptual metric should notice what listeners notice, and nothing else at all.",
        "Rain fell on the old station roof as the last train pulled slowly away tonight.",
        "Measure twice and cut once, the carpenter said, handing over the worn yellow rule.",
    ][i % 4]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        done = subprocess.run(["espeak-ng", "-s", str(150 + 10 * i), "-w", str(wav), text], capture_output=True)
        if done.returncode:
            return None
        audio, rate = sf.read(str(wav), dtype="float64")
    return resample(audio, rate, SR, dtype=np.float64) if rate != SR else audio


# -- workers (one per subprocess) ------------------------------------------------------------------
def _time(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, oneDNN kernel choice
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def worker(method: str, mode: str, data: Path, threads: int, repeats: int, checkpoint: str | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    arrays = np.load(data)
    refs, degs = arrays["refs"], arrays["degs"]
    audio_s = refs.size / SR
    if method == "jndlab":
        sys.path.insert(0, str(REPO))
        if checkpoint:
            from model import load_metric

            metric = load_metric(checkpoint, device="cpu")
        else:
            from model.network import DPAMMetric

            metric = DPAMMetric().eval()
            for p in metric.parameters():
                p.requires_grad_(False)
        ref, deg = torch.from_numpy(refs), torch.from_numpy(degs)

        def run():
            if mode == "inference":
                with torch.no_grad():
                    metric(ref, deg)
            else:
                est = deg.clone().requires_grad_(True)
                metric(ref, est).sum().backward()
    elif method == "dpam-port":
        sys.path.insert(0, str(REPO))
        from model import load_metric

        metric = load_metric("dpam", device="cpu")  # frozen, eval mode
        ref, deg = torch.from_numpy(refs), torch.from_numpy(degs)

        def run():
            if mode == "inference":
                with torch.no_grad():
                    metric(ref, deg, sample_rate=SR)
            else:
                est = deg.clone().requires_grad_(True)
                metric(ref, est, sample_rate=SR).sum().backward()
    elif method == "cdpam":
        import torchaudio.functional as AF

        try:
            import cdpam
        except Exception as error:  # noqa: BLE001 - any import failure: report and skip
            return {"skipped": f"cdpam not importable: {type(error).__name__}: {error}"}
        real_load = torch.load
        torch.load = lambda *a, **k: real_load(*a, **{**k, "weights_only": False})  # its own trusted wheel file
        try:
            model = cdpam.CDPAM(dev="cpu")
        finally:
            torch.load = real_load
        for p in model.model.parameters():
            p.requires_grad_(False)
        ref = AF.resample(torch.from_numpy(refs), SR, 22050) * 32768
        deg = AF.resample(torch.from_numpy(degs), SR, 22050) * 32768

        def run():
            if mode == "inference":
                with torch.no_grad():
                    model.forward(ref, deg)
            else:
                est = deg.clone().requires_grad_(True)
                model.forward(ref, est).sum().backward()
    elif method == "pesq":
        try:
            from pesq import pesq
        except ImportError as error:
            return {"skipped": f"pesq not importable: {error}"}

        def run():
            for r, d in zip(refs, degs):
                pesq(SR, r, d, "wb")
    else:
        raise ValueError(method)
    seconds = _time(run, repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return {"audio_s": audio_s, "wall_s": seconds, "throughput": audio_s / seconds, "peak_rss_mb": peak_mb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=4, help="number of clips (one batch)")
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length in seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every method")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", help="a jndlab metric checkpoint (default: random weights; speed is the same)")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="1 clip of 1 s, 1 repeat: a smoke run")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "MODE", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        method, mode, data = args.worker
        print(json.dumps(worker(method, mode, Path(data), args.threads, args.repeats, args.checkpoint)))
        return 0
    from tqdm import tqdm

    methods = METHODS
    if args.quick:  # CDPAM scores ~0.1 s of audio per second: its backward pass is left out here
        args.clips, args.seconds, args.repeats = 1, 0.5, 1
        methods = tuple(m for m in METHODS if m != ("cdpam", "forward+backward"))
    refs, degs = make_clips(args.clips, args.seconds, seed=0)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "clips.npz"
        np.savez(data, refs=refs, degs=degs)
        for method, mode in tqdm(methods, desc="benchmarks"):
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                method,
                mode,
                str(data),
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats if method != "cdpam" else 1),
            ]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                results[(method, mode)] = {"skipped": f"failed: {tail}"}
            else:
                results[(method, mode)] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{args.clips} clips x {args.seconds:g} s, 16 kHz (CDPAM at 22.05 kHz), {args.threads} CPU thread(s)\n")
    print("| method | mode | audio s / s | x CDPAM | peak RSS MB |\n|---|---|---:|---:|---:|")
    for (method, mode), r in results.items():
        if "skipped" in r:
            print(f"| {method} | {mode} | skipped: {r['skipped']} | | |")
            continue
        peer = results.get(("cdpam", mode), {})
        ratio = f"{r['throughput'] / peer['throughput']:.1f}" if "throughput" in peer else "n/a"
        print(f"| {method} | {mode} | {r['throughput']:.1f} | {ratio} | {r['peak_rss_mb']:.0f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({f"{m}/{k}": v for (m, k), v in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
