"""Parity fixtures for DPAM's SE model: the published checkpoint run in TensorFlow on our inputs.

    .venv-tf/bin/python tools/tf/se_make_fixtures.py \
        --checkpoint ../shared/dpam/published/se_model --sample ../shared/dpam/published/sample_audio/ref.wav \
        --out tests/se/fixtures/dpam_se_parity.npz

Runs in the TensorFlow environment (tools/tf/requirements.txt), never in jndlab's. The
graph is the original's (pranaymanocha/PerceptualAudio se_code: ``senet`` in
network_model.py, ``signal_to_dilated``/``dilated_to_signal``/``nm``/``lrelu`` in
helper.py) rebuilt with tf.compat.v1 + tf_slim, with the published inference's
settings (SE_LAYERS 13, SE_CHANNELS 64, norm "NM", batch of one file of shape
[1, 1, T, 1], 16 kHz float audio in [-1, 1]); the trainable se_ variables are restored from
the checkpoint by name and every one of them must be found (the batch-norm moving
averages are not in the published files and are unused in training mode).

Inputs (written into the fixture with the outputs): the DPAM sample clip ref.wav
(MIT, same source as the weights) resampled to 16 kHz, plus seeded white noise at 5 dB
SNR and seeded brown noise at 0 dB, peaks at 0.8 and 0.3, cut to lengths that exercise the dilation padding
(a multiple of 4096, odd lengths, shorter than the largest dilation).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import wave
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
LENGTHS = (16384, 12345, 4001, 997)


def _tf_slim():
    """tf-slim 1.1 looks up the Keras-2 legacy layers under ``tf_keras.legacy_tf_layers``;
    tf-keras 2.21 keeps them under ``tf_keras.src.legacy_tf_layers``: alias the modules."""
    for sub in ("", ".base", ".core", ".convolutional", ".normalization", ".pooling"):
        try:
            sys.modules.setdefault(
                f"tf_keras.legacy_tf_layers{sub}", importlib.import_module(f"tf_keras.src.legacy_tf_layers{sub}")
            )
        except ImportError:
            pass
    import tensorflow as tf
    import tf_slim as slim

    tf.compat.v1.disable_eager_execution()
    return tf, slim


def build_graph(tf, slim):
    def lrelu(x):
        return tf.maximum(0.2 * x, x)

    def signal_to_dilated(signal, dilation, n_channels):
        shape = tf.shape(signal)
        pad_elements = dilation - 1 - (shape[2] + dilation - 1) % dilation
        dilated = tf.pad(signal, [[0, 0], [0, 0], [0, pad_elements], [0, 0]])
        dilated = tf.reshape(dilated, [shape[0], -1, dilation, n_channels])
        return tf.transpose(dilated, perm=[0, 2, 1, 3]), pad_elements

    def dilated_to_signal(dilated, pad_elements, n_channels):
        shape = tf.shape(dilated)
        signal = tf.transpose(dilated, perm=[0, 2, 1, 3])
        signal = tf.reshape(signal, [shape[0], 1, -1, n_channels])
        return signal[:, :, : shape[1] * shape[2] - pad_elements, :]

    def nm(x):
        w0 = tf.compat.v1.Variable(1.0, name="w0")
        w1 = tf.compat.v1.Variable(0.0, name="w1")
        return w0 * x + w1 * slim.batch_norm(x)

    def senet(inp, n_layers=13, ksz=3, n_channels=64):
        net = None
        for i in range(n_layers):
            if i == 0:
                net = slim.conv2d(
                    inp,
                    n_channels,
                    [1, ksz],
                    activation_fn=lrelu,
                    normalizer_fn=nm,
                    scope=f"se_conv_{i}",
                    padding="SAME",
                )
            else:
                net, pad_elements = signal_to_dilated(net, n_channels=n_channels, dilation=2**i)
                net = slim.conv2d(
                    net,
                    n_channels,
                    [1, ksz],
                    activation_fn=lrelu,
                    normalizer_fn=nm,
                    scope=f"se_conv_{i}",
                    padding="SAME",
                )
                net = dilated_to_signal(net, n_channels=n_channels, pad_elements=pad_elements)
        net = slim.conv2d(
            net, n_channels, [1, ksz], activation_fn=lrelu, normalizer_fn=nm, scope="se_conv_last", padding="SAME"
        )
        return slim.conv2d(net, 1, [1, 1], activation_fn=None, scope="se_fc_last", padding="SAME")

    inp = tf.compat.v1.placeholder(tf.float32, shape=[None, 1, None, 1])
    return inp, senet(inp)


def make_inputs(sample: Path, seed: int) -> list[np.ndarray]:
    with wave.open(str(sample), "rb") as w:  # 16-bit mono; this environment has no soundfile/scipy
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{sample}: expected 16-bit mono")
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    # to 16 kHz by linear interpolation: the fixture needs speech-like input, not a faithful resampling
    speech = np.interp(np.arange(int(len(audio) * 16000 / rate)) * rate / 16000, np.arange(len(audio)), audio)
    rng = np.random.default_rng(seed)
    inputs = []
    for k, n in enumerate(LENGTHS):
        clean = np.resize(speech, n)  # repeats the clip when it is shorter than n
        if k % 2 == 0:
            noise = rng.standard_normal(n)
            snr_db = 5.0
        else:
            noise = np.cumsum(rng.standard_normal(n))
            noise -= np.linspace(noise[0], noise[-1], n)  # brown noise without drift
            snr_db = 0.0
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
        mixture = clean + noise
        inputs.append((mixture * (0.8 if k % 2 == 0 else 0.3) / np.max(np.abs(mixture))).astype(np.float32))
    return inputs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="folder of se_model.ckpt.index/.data-*")
    p.add_argument("--sample", required=True, help="a speech WAV (DPAM's sample_audio/ref.wav)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    tf, slim = _tf_slim()
    folder = Path(args.checkpoint)
    prefix = str(next(folder.glob("*.index")).with_suffix(""))
    inp, out = build_graph(tf, slim)
    reader = tf.train.load_checkpoint(prefix)
    stored = reader.get_variable_to_shape_map()
    # as se_infer.py: the trainable se_ variables come from the checkpoint (the moving averages,
    # unused in training-mode batch norm, are not stored in the published files)
    variables = {v.op.name: v for v in tf.compat.v1.trainable_variables()}
    missing = sorted(set(variables) - set(stored))
    if missing or not all(name.startswith("se_") for name in variables):
        raise SystemExit(f"graph variables not in the checkpoint: {missing}")
    saver = tf.compat.v1.train.Saver(var_list=variables)
    inputs = make_inputs(Path(args.sample), args.seed)
    outputs = []
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        saver.restore(sess, prefix)
        for x in inputs:
            y = sess.run(out, feed_dict={inp: x.reshape(1, 1, -1, 1)})
            outputs.append(np.asarray(y, np.float32).reshape(-1))
    data = {}
    for k, (x, y) in enumerate(zip(inputs, outputs)):
        data[f"input_{k}"] = x
        data[f"output_{k}"] = y
    sources = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
    data["meta"] = np.array(
        repr(
            {
                "tensorflow": tf.__version__,
                "checkpoint_sha256": sources,
                "sample": Path(args.sample).name,
                "seed": args.seed,
                "lengths": LENGTHS,
                "variables_restored": len(variables),
            }
        )
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    for k, (x, y) in enumerate(zip(inputs, outputs)):
        print(f"input {k}: {len(x)} samples, |x| max {np.abs(x).max():.3f}; output rms {np.sqrt(np.mean(y**2)):.4f}")
    print(f"restored {len(variables)} variables; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
