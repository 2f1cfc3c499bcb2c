"""Convert DPAM's published TensorFlow 1 checkpoints into jndlab metric checkpoints.

``python -m model import-dpam --tf-checkpoint DIR --variant scratch|finetune|linear --out CKPT``

The TensorBundle (``.index`` + ``.data-*``) is read with TensorFlow's own checkpoint reader
(``tf.train.load_checkpoint``), not a hand-written parser. jndlab never imports TensorFlow
elsewhere: this module imports it only inside ``read_tf_checkpoint``, and when the running
interpreter has no TensorFlow it runs the tools environment's interpreter (``.venv-tf``,
made from ``tools/tf/requirements.txt``) in a subprocess to dump the tensors to a
temporary ``.npz``. The tensors used (see ``../shared/dpam/published/README.md``):

- ``loss_conv_{i}/weights`` ``[1, 3, Cin, Cout]`` -> ``convs.{i}.weight`` ``[Cout, Cin, 3]``
  (both frameworks cross-correlate, so no flip);
- ``loss_conv_{i}/BatchNorm/beta`` ``[Cout]`` -> ``norms.{i}.bias``;
- ``weights_{i}`` ``[C]`` -> ``raw_weights.{i}`` (signed; the distance uses |w|).

Batch-norm moving averages, the training head (``dense*``) and Adam slots are not used by
the published inference and are left out. The network config is ``DPAM_PORT_CONFIG``.

The port computes what the published inference graph computes (``tools/tf/make_parity_fixtures.py``
checks it against TensorFlow): per-channel weighting of each layer's feature difference. The
graphs that trained these weights multiplied them after a reshape that did not line channels
up with weights; the published inference (and its README value 0.1929) does not, and neither
does fine-tuning here (``python -m model train --init dpam``). Each signal is normalised by its
own statistics, as the published code (one pair at a time) does; a TensorFlow batch of several
pairs would have mixed their statistics.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import FORMAT, save_checkpoint
from model.network import DPAM_PORT_CONFIG, DPAMMetric
from perturbations.manifest import sha256_file

SOURCE_REPOSITORY = "https://github.com/pranaymanocha/PerceptualAudio"
SOURCE_COMMIT = "4bd0a84"
SOURCE_FOLDERS = {
    "scratch": "dpam/pre-model/scratch_loss",
    "finetune": "dpam/pre-model/finetune_loss",
    "linear": "dpam/pre-model/linear_layer_loss",
}
VARIANTS = tuple(SOURCE_FOLDERS)
LICENSE = "MIT"
COPYRIGHT = "Copyright (c) 2020 Pranay Manocha"
DATASET_NOTE = (
    "trained on human just-noticeable-difference judgments: the DPAM JND dataset of crowd-sourced "
    "same/different judgments (Manocha et al., 'A Differentiable Perceptual Audio Metric Learned "
    "from Just Noticeable Differences', Interspeech 2020)"
)
VARIANT_NOTES = {
    "scratch": "metric trained from random initialisation on the JND judgments",
    "finetune": "metric initialised from DPAM's pretext (acoustic-scene) model, all layers trained on the JND judgments",
    "linear": "DPAM's pretext backbone frozen; only the per-layer channel weights trained on the JND judgments",
}
TOOLS_ENV_HINT = (
    "create the tools environment: python3 -m venv .venv-tf && .venv-tf/bin/pip install -r "
    "tools/tf/requirements.txt (then rerun, or pass --tf-python .venv-tf/bin/python)"
)

_DUMP = r"""
import sys, numpy as np, tensorflow as tf
reader = tf.train.load_checkpoint(sys.argv[1])
names = [n for n in reader.get_variable_to_shape_map() if n.startswith(("loss_conv_", "weights_"))]
np.savez(sys.argv[2], **{n.replace("/", "|"): reader.get_tensor(n) for n in names})
"""


def checkpoint_prefix(folder: str | os.PathLike) -> Path:
    """The TensorBundle prefix in ``folder`` (the one ``*.index`` file there), or the prefix itself."""
    path = Path(folder)
    if path.with_name(path.name + ".index").is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no TensorFlow checkpoint folder or prefix")
    indexes = sorted(path.glob("*.index"))
    if len(indexes) != 1:
        raise ValueError(f"{path}: expected one TensorFlow checkpoint (*.index), found {len(indexes)}")
    prefix = indexes[0].with_suffix("")
    if not list(path.glob(prefix.name + ".data-*")):
        raise ValueError(f"{path}: {indexes[0].name} has no .data-* file beside it")
    return prefix


def source_files(prefix: Path) -> list[Path]:
    return sorted([prefix.with_name(prefix.name + ".index"), *prefix.parent.glob(prefix.name + ".data-*")])


def _default_tf_python() -> str | None:
    try:
        import importlib.util

        if importlib.util.find_spec("tensorflow") is not None:
            return None  # this interpreter has it
    except (ImportError, ValueError):
        pass
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = root / ".venv-tf" / "bin" / "python"
        if candidate.is_file():
            return str(candidate)
    raise RuntimeError(f"TensorFlow is not installed in this environment and no .venv-tf was found: {TOOLS_ENV_HINT}")


def read_tf_checkpoint(folder: str | os.PathLike, tf_python: str | None = None) -> dict[str, np.ndarray]:
    """The ``loss_conv_*`` and ``weights_*`` tensors of a DPAM checkpoint, read by TensorFlow.

    ``tf_python``: an interpreter with TensorFlow to run the reader in (default: this one
    when it has TensorFlow, else ``.venv-tf/bin/python``). Raises ``RuntimeError`` with the
    set-up command when no TensorFlow is available, ``ValueError`` for a bad checkpoint.
    """
    prefix = checkpoint_prefix(folder)
    if tf_python is None:
        tf_python = _default_tf_python()
    if tf_python is None:
        import tensorflow as tf  # the one place jndlab touches TensorFlow

        try:
            reader = tf.train.load_checkpoint(str(prefix))
        except Exception as error:  # noqa: BLE001 - TensorFlow raises several kinds
            raise ValueError(f"{prefix}: TensorFlow cannot read this checkpoint ({error})") from None
        names = [n for n in reader.get_variable_to_shape_map() if n.startswith(("loss_conv_", "weights_"))]
        return {n: np.asarray(reader.get_tensor(n)) for n in names}
    if not Path(tf_python).is_file():
        raise RuntimeError(f"{tf_python}: no such interpreter; {TOOLS_ENV_HINT}")
    with tempfile.TemporaryDirectory() as tmp:
        dump = Path(tmp) / "tensors.npz"
        done = subprocess.run(
            [tf_python, "-c", _DUMP, str(prefix), str(dump)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if done.returncode:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            if "No module named 'tensorflow'" in done.stderr:
                raise RuntimeError(f"{tf_python} has no TensorFlow; {TOOLS_ENV_HINT}")
            raise ValueError(f"{prefix}: TensorFlow ({tf_python}) cannot read this checkpoint ({tail})")
        with np.load(dump) as data:
            return {k.replace("|", "/"): data[k] for k in data.files}


def state_dict_from_tf(tensors: dict[str, np.ndarray], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Map the TF tensors onto ``DPAMMetric(**config)``'s state dict; every shape is checked."""
    model = DPAMMetric(**config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for i in range(config["n_layers"]):
        names = (f"loss_conv_{i}/weights", f"loss_conv_{i}/BatchNorm/beta", f"weights_{i}")
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"the checkpoint lacks {', '.join(missing)}: not a DPAM metric checkpoint")
        kernel = torch.from_numpy(np.asarray(tensors[names[0]], np.float32))
        if kernel.ndim != 4 or kernel.shape[0] != 1:
            raise ValueError(f"{names[0]} has shape {tuple(kernel.shape)}, expected [1, k, Cin, Cout]")
        pairs = {
            f"convs.{i}.weight": kernel[0].permute(2, 1, 0).contiguous(),
            f"norms.{i}.bias": torch.from_numpy(np.asarray(tensors[names[1]], np.float32)),
            f"raw_weights.{i}": torch.from_numpy(np.asarray(tensors[names[2]], np.float32)),
        }
        for key, value in pairs.items():
            if tuple(value.shape) != tuple(state[key].shape):
                raise ValueError(
                    f"{key}: the checkpoint gives shape {tuple(value.shape)}, the network needs "
                    f"{tuple(state[key].shape)}"
                )
            state[key] = value
    return state


def convert(
    tf_checkpoint: str | os.PathLike, variant: str, out: str | os.PathLike, tf_python: str | None = None
) -> dict[str, Any]:
    """Read a published DPAM checkpoint and write a jndlab checkpoint at ``out``; returns the payload."""
    from perturbations.provenance import code_version

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    prefix = checkpoint_prefix(tf_checkpoint)
    tensors = read_tf_checkpoint(prefix, tf_python)
    config = dict(DPAM_PORT_CONFIG)
    state = state_dict_from_tf(tensors, config)
    DPAMMetric(**config).load_state_dict(state)  # strict: every key present and shaped
    name = "dpam" if variant == "scratch" else f"dpam-{variant}"
    payload = {
        "format": FORMAT,
        "model_class": "DPAMMetric",
        "model_config": config,
        "state_dict": state,
        "training_config": {"source": "converted from a published TensorFlow checkpoint", "variant": variant},
        "seed": 0,
        "code_version": code_version(),
        "metrics": {},
        "trained_on": "human",
        "perceptual_validity": f"DPAM {variant} variant ('{name}'), {DATASET_NOTE}; {VARIANT_NOTES[variant]}",
        "variant": variant,
        "name": name,
        "head_fitted": False,  # jndlab's judgment head is not DPAM's; training fits it first
        "provenance": {
            "source_repository": SOURCE_REPOSITORY,
            "source_commit": SOURCE_COMMIT,
            "source_folder": SOURCE_FOLDERS[variant],
            "source_files": {p.name: sha256_file(p) for p in source_files(prefix)},
            "license": LICENSE,
            "copyright": COPYRIGHT,
            "trained_on": "human",
            "note": DATASET_NOTE,
            "reader": "tf.train.load_checkpoint",
        },
    }
    save_checkpoint(payload, out)
    return payload


def main_import(args) -> int:
    payload = convert(args.tf_checkpoint, args.variant, args.out, args.tf_python)
    prov = payload["provenance"]
    print(
        f"converted DPAM {args.variant} ({prov['source_repository']} @ {prov['source_commit']}, "
        f"{prov['license']} licence) into {args.out}"
    )
    for name, digest in prov["source_files"].items():
        print(f"  sha256 {digest}  {name}")
    print(f"note: {payload['perceptual_validity']}")
    return 0
