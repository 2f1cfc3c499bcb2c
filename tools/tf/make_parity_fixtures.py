"""Reference distances from DPAM's published checkpoints, computed by TensorFlow itself.

Rebuilds the published inference graph with ``tf.compat.v1`` and tf-slim exactly as
pranaymanocha/PerceptualAudio (commit 4bd0a84) builds it in ``dpam/dpam.py`` and
``dpam/network_model.py`` (``featureloss``: two ``lossnet`` towers sharing variables,
``slim.conv2d`` [1, 3] kernels with ``padding='SAME'``, stride [1, 2] except the last
layer, ``normalizer_fn=slim.batch_norm`` with its defaults, i.e. training-mode statistics,
epsilon 0.001, offset only; ``lrelu(x) = max(0.2 x, x)``; ``slim.dropout`` at keep_prob 1;
distance = sum over layers of ``reduce_mean(|w * (phi(test) - phi(ref))|)``), restores the
trainable variables with ``tf.train.Saver`` and runs it, one pair at a time (batch of one,
as the published ``DPAM.forward`` does).

Run it in the tools environment (never from jndlab's own venv):

    python3 -m venv .venv-tf && .venv-tf/bin/pip install -r tools/tf/requirements.txt
    .venv-tf/bin/python tools/tf/make_parity_fixtures.py \
        --published ../shared/dpam/published --out tests/model/fixtures/dpam_parity.npz

The output holds, for every synthesised pair, the two waveforms as float32 in [-1, 1] (the
graph is fed them times 32768, without rounding; for the sample files, their names), and per variant the total distance and the 14
per-layer terms. Pairs: the three published sample files (ref vs 2, ref vs 4, 2 vs 4)
and synthesised pairs of odd and even lengths (seeded numpy), so that the per-layer
lengths mix odd and even and TensorFlow's asymmetric SAME padding is exercised.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import wave
from pathlib import Path

import numpy as np

VARIANTS = {"scratch": "scratch_loss", "finetune": "finetune_loss", "linear": "linear_layer_loss"}
N_LAYERS, BASE_CHANNELS, BLK_CHANNELS, KSZ = 14, 32, 5, 3
SCALE = 32768.0


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


def read_wav(path: Path) -> np.ndarray:
    """16-bit mono WAV -> float32 in [-1, 1] (int16 / 32768)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (data.astype(np.float32) / SCALE).astype(np.float32)


def synthesised_pairs(seed: int = 20200) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Harmonic AM tones with coloured-ish noise added, at lengths whose per-layer halvings mix parities."""
    rng = np.random.default_rng(seed)
    out = []
    for name, length, snr_db, level in (
        ("odd_12345", 12345, 20.0, 0.3),
        ("even_7000", 7000, 5.0, 0.1),
        ("odd_22051", 22051, 35.0, 0.5),
        ("quiet_9999", 9999, 10.0, 0.001),
    ):
        t = np.arange(length) / 22050.0
        f0 = rng.uniform(90, 260)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 12))
        x *= 1 + 0.7 * np.sin(2 * np.pi * rng.uniform(2, 6) * t)
        x = level * x / np.max(np.abs(x))
        noise = np.cumsum(rng.standard_normal(length)) * 0.02 + rng.standard_normal(length)
        noise -= noise.mean()
        y = x + noise * np.sqrt(np.mean(x**2) / np.mean(noise**2)) * 10 ** (-snr_db / 20)
        out.append((name, x.astype(np.float32), np.clip(y, -1, 1).astype(np.float32)))
    # a pair of unrelated signals (a large distance), odd length
    a = rng.standard_normal(5001).astype(np.float32) * 0.2
    b = np.sin(2 * np.pi * 440 * np.arange(5001) / 22050).astype(np.float32) * 0.4
    out.append(("unrelated_5001", a, b))
    return out


def build_graph(tf, slim):
    """The published inference graph (dpam.DPAM with type != 'pretrained')."""

    def lrelu(x):
        return tf.maximum(0.2 * x, x)

    def lossnet(inp, keep_prob, reuse):
        layers = []
        for i in range(N_LAYERS):
            n_channels = BASE_CHANNELS * (2 ** (i // BLK_CHANNELS))
            src = inp if i == 0 else layers[-1]
            if i < N_LAYERS - 1:
                net = slim.conv2d(
                    src,
                    n_channels,
                    [1, KSZ],
                    activation_fn=lrelu,
                    normalizer_fn=slim.batch_norm,
                    stride=[1, 2],
                    scope=f"loss_conv_{i}",
                    padding="SAME",
                    reuse=reuse,
                )
                net = slim.dropout(net, keep_prob, scope=f"Dropout_{i}")
            else:
                net = slim.conv2d(
                    src,
                    n_channels,
                    [1, KSZ],
                    activation_fn=lrelu,
                    normalizer_fn=slim.batch_norm,
                    scope=f"loss_conv_{i}",
                    padding="SAME",
                    reuse=reuse,
                )
            layers.append(net)
        return layers

    tf.compat.v1.reset_default_graph()
    test = tf.compat.v1.placeholder(tf.float32, shape=[None, None, None, 1])
    ref = tf.compat.v1.placeholder(tf.float32, shape=[None, None, None, 1])
    keep_prob = tf.compat.v1.placeholder_with_default(1.0, shape=())
    feat_current = lossnet(test, keep_prob, reuse=False)
    feat_target = lossnet(ref, keep_prob, reuse=True)
    per_layer = []
    for i in range(N_LAYERS):
        a = feat_current[i] - feat_target[i]
        weights = tf.Variable(tf.random.normal([BASE_CHANNELS * (2 ** (i // BLK_CHANNELS))]), name=f"weights_{i}")
        a1 = tf.transpose(a, [0, 1, 3, 2])
        per_layer.append(tf.reduce_mean(tf.abs(tf.multiply(a1, weights[:, tf.newaxis]))))
    others = tf.stack(per_layer)
    return ref, test, others, tf.reduce_sum(others, 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--published", default="../shared/dpam/published", help="folder with the *_loss checkpoints")
    p.add_argument("--out", default="tests/model/fixtures/dpam_parity.npz")
    args = p.parse_args(argv)
    tf, slim = _tf_slim()
    root = Path(args.published)
    samples = {n: read_wav(root / "sample_audio" / f"{n}.wav") for n in ("ref", "2", "4")}
    pairs = [
        ("sample_ref_2", samples["ref"], samples["2"]),
        ("sample_ref_4", samples["ref"], samples["4"]),
        ("sample_2_4", samples["2"], samples["4"]),
    ] + synthesised_pairs()
    out: dict[str, np.ndarray] = {"pair_names": np.array([n for n, _, _ in pairs])}
    for name, a, b in pairs:
        if name.startswith("sample_"):  # the published files: tests read their copies in tests/model/fixtures/
            out[f"{name}/files"] = np.array([f"{n}.wav" for n in name.split("_")[1:]])
        else:
            out[f"{name}/ref"], out[f"{name}/test"] = a, b
    for variant, folder in VARIANTS.items():
        ref_ph, test_ph, others, distance = build_graph(tf, slim)
        saver = tf.compat.v1.train.Saver(tf.compat.v1.trainable_variables())
        with tf.compat.v1.Session() as sess:
            # the moving averages are inputs of the fused op but unused in training mode (the published
            # code restores only the trainable variables): initialise everything, then restore
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.restore(sess, str(root / folder / "my_test_model"))
            for name, a, b in pairs:
                feed = {ref_ph: (a * SCALE).reshape(1, 1, -1, 1), test_ph: (b * SCALE).reshape(1, 1, -1, 1)}
                layers, total = sess.run([others, distance], feed_dict=feed)
                out[f"{name}/{variant}/distance"] = np.float64(total)
                out[f"{name}/{variant}/per_layer"] = layers.astype(np.float64)
                print(f"{variant:9s} {name:16s} {total:.6f}")
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
