"""CPU real-time factor of ``python -m se enhance``'s path, with the bare forward pass as its floor.

    .venv/bin/python benchmarks/se_speed.py [--seconds 30] [--threads 1] [--repeats 3] [--chunk-s 10]

RTF = seconds of processing per second of audio (lower is faster; < 1 is faster than
real time). Rows:
- ``enhance (file -> file)``: ``Enhancer.enhance_file`` on a PCM_16 WAV: read, chunked
  overlap-add with its context margins, the clipping guard, atomic write;
- ``forward (bare)``: one ``network(x)`` call on the same audio as one tensor, no chunks,
  under ``torch.inference_mode`` (the floor).
The ratio enhance/forward is the overhead of the full path (mostly the recomputed
context: each 10 s chunk carries 2 × 0.512 s of receptive-field margin).
The network is the default CAN, randomly initialised (speed does not depend on the weights).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="audio length")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="best of N")
    parser.add_argument("--chunk-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import soundfile as sf
    import torch

    from se.enhance import Enhancer
    from se.networks import build_network, count_parameters

    torch.set_num_threads(args.threads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network("can").eval()
    rate = net.sample_rate
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * rate)) / rate
    audio = (0.1 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
             + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    enhancer = Enhancer(net, device="cpu", chunk_s=args.chunk_s)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(str(src), audio, rate, subtype="PCM_16")
        enhancer.enhance_file(src, dst)  # warm-up
        full = _best(lambda: enhancer.enhance_file(src, dst), args.repeats)
    x = torch.from_numpy(audio)[None]

    def bare():
        with torch.inference_mode():
            net(x)

    bare()
    floor = _best(bare, args.repeats)
    print(f"CAN: {count_parameters(net):,} parameters, receptive field {net.receptive_field} samples; "
          f"{args.seconds:g} s of audio at {rate} Hz; {args.threads} thread(s); chunk {args.chunk_s:g} s; "
          f"best of {args.repeats}")
    print("| path | seconds | RTF |")
    print("|---|---|---|")
    print(f"| enhance (file -> file) | {full:.3f} | {full / args.seconds:.4f} |")
    print(f"| forward (bare) | {floor:.3f} | {floor / args.seconds:.4f} |")
    print(f"ratio enhance / forward: {full / floor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
