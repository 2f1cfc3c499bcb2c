"""CPU real-time factor of ``python -m se enhance``'s path, with the bare forward pass as its floor.

    .venv/bin/python benchmarks/se_speed.py [--seconds 30] [--threads 1] [--repeats 3] [--chunk-s 10]
        [--checkpoint out/se_comparison/a/last.pt | dpam-se] [--json benchmarks/results/se_speed.json] [--quick]

RTF = seconds of processing per second of audio (lower is faster; < 1 is faster than
real time). Rows:
- ``enhance (file -> file)``: ``Enhancer.enhance_file`` on a PCM_16 WAV: read, chunked
  overlap-add with its context margins, the clipping guard, atomic write;
- ``forward (bare, chunk-s pieces)``: ``network(piece)`` on the same audio cut into
  pieces of ``--chunk-s`` with no context margin, no I/O, no overlap-add, under
  ``torch.inference_mode``: the floor (the least any chunked path can cost);
- ``forward (bare, one tensor)``: one call on the whole file, for reference. On CPU it
  is not reliably faster than the pieces: a 30 s input makes ~120 MB activations per
  layer (on this 2-core machine it took 0.91x to 1.15x the time of the full chunked
  path across runs).
The ratio enhance/floor is the overhead of the full path (mostly the recomputed context:
each 10 s chunk carries 2 × 0.512 s of receptive-field margin).
The network is the default CAN, randomly initialised (speed does not depend on the weights),
or the one in ``--checkpoint`` (e.g. the trained system (a) of benchmarks/se_comparison.py).
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
    parser.add_argument("--checkpoint", help="enhancer checkpoint to time (default: the default CAN, random weights)")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 s of audio, 2 s chunks, best of 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.chunk_s, args.repeats = 4.0, 2.0, 1
    sys.path.insert(0, str(REPO))
    import soundfile as sf
    import torch

    from se.enhance import Enhancer
    from se.networks import build_network, count_parameters

    torch.set_num_threads(args.threads)
    if args.checkpoint:
        from se.checkpoint import load_enhancer

        net = load_enhancer(args.checkpoint, device="cpu")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = build_network("can").eval()
    rate = net.sample_rate
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * rate)) / rate
    audio = (
        0.1 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(len(t))
    ).astype(np.float32)
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

    pieces = x.split(max(1, int(round(args.chunk_s * rate))), dim=-1)

    def bare_pieces():
        with torch.inference_mode():
            for piece in pieces:
                net(piece)

    bare()
    whole = _best(bare, args.repeats)
    bare_pieces()
    floor = _best(bare_pieces, args.repeats)
    source = args.checkpoint or "default CAN, random weights"
    print(f"{source}: {net.extra_repr()}")
    print(
        f"CAN: {count_parameters(net):,} parameters, receptive field {net.receptive_field} samples; "
        f"{args.seconds:g} s of audio at {rate} Hz; {args.threads} thread(s); chunk {args.chunk_s:g} s; "
        f"best of {args.repeats}"
    )
    print("| path | seconds | RTF |")
    print("|---|---|---|")
    print(f"| enhance (file -> file) | {full:.3f} | {full / args.seconds:.4f} |")
    print(f"| forward (bare, {args.chunk_s:g} s pieces): the floor | {floor:.3f} | {floor / args.seconds:.4f} |")
    print(f"| forward (bare, one tensor) | {whole:.3f} | {whole / args.seconds:.4f} |")
    print(f"ratio enhance / floor: {full / floor:.2f}  (enhance / one-tensor forward: {full / whole:.2f})")
    if args.json:
        import json
        import os
        import platform

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "network": source,
                    "network_config": net.config,
                    "parameters": count_parameters(net),
                    "receptive_field_samples": int(net.receptive_field),
                    "audio_s": args.seconds,
                    "sample_rate": rate,
                    "threads": args.threads,
                    "chunk_s": args.chunk_s,
                    "repeats": args.repeats,
                    "enhance_s": full,
                    "forward_pieces_s": floor,
                    "forward_whole_s": whole,
                    "rtf_enhance": full / args.seconds,
                    "rtf_forward_pieces": floor / args.seconds,
                    "rtf_forward_whole": whole / args.seconds,
                    "ratio_enhance_over_floor": full / floor,
                    "ratio_enhance_over_whole_forward": full / whole,
                    "host": {
                        "python": platform.python_version(),
                        "machine": platform.machine(),
                        "cpus": os.cpu_count(),
                        "torch": torch.__version__,
                    },
                },
                indent=2,
            )
        )
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
