"""``python -m se import-dpam``: DPAM's published TensorFlow SE checkpoint -> a jndlab enhancer.

    python -m se import-dpam --tf-checkpoint shared/dpam/published/se_model --out dpam_se.pt

Reads the checkpoint with TensorFlow's own reader (``tf.train.load_checkpoint``);
TensorFlow is imported here only, lazily, and nothing else in jndlab needs it (install
``tools/tf/requirements.txt`` in the environment that runs this command). Tensors
(pranaymanocha/PerceptualAudio ``se_code/network_model.py``, ``senet`` with ``nm``):

=================================  ===============  ======================================
TF variable                        shape            ``DPAMSENetwork`` parameter
=================================  ===============  ======================================
``se_conv_{i}/weights``            [1, 3, Cin, 64]  ``convs.{i}.weight`` [64, Cin, 3]
``se_conv_{i}/BatchNorm/beta``     [64]             ``norms.{i}.beta``
``se_conv_{i}/w0``, ``.../w1``     []               ``norms.{i}.w0``, ``norms.{i}.w1``
``se_conv_last/...``               as above         index 13 (the last undilated layer)
``se_fc_last/weights``, ``biases`` [1, 1, 64, 1]    ``output.weight`` [1, 64, 1], ``output.bias``
=================================  ===============  ======================================

The batch-norm moving averages and Adam slots in the checkpoint are not used by the
published inference and are left out. Every parameter of the network must be found
with its shape, or the conversion fails naming the tensor.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from perturbations.manifest import sha256_file

if TYPE_CHECKING:
    from se.networks import ContextAggregationNetwork

SOURCE = {
    "repository": "https://github.com/pranaymanocha/PerceptualAudio",
    "commit": "4bd0a84",
    "folder": "dpam/pre-model/se_model",
    "licence": "MIT, Copyright (c) 2020 Pranay Manocha",
}
TRAINED_ON = (
    "DPAM's speech-enhancement model: Germain et al.'s context aggregation network trained by the DPAM "
    "authors on the Valentini et al. (2016) noisy VCTK training set with the DPAM loss, a metric "
    "learned from human JND judgments (which DPAM loss variant is not recorded upstream)"
)


def find_checkpoint_prefix(folder: str | os.PathLike) -> str:
    """The TensorBundle prefix in ``folder`` (``X`` for ``X.index`` + ``X.data-*``); a prefix passes through."""
    folder = Path(folder)
    if folder.is_file() and folder.suffix == ".index":
        return str(folder.with_suffix(""))
    if not folder.is_dir():
        if Path(f"{folder}.index").is_file():
            return str(folder)
        raise FileNotFoundError(f"{folder}: no such TensorFlow checkpoint folder or prefix")
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) != 1:
        raise ValueError(
            f"{folder}: expected one TensorFlow checkpoint (*.index + *.data-*), found "
            f"{len(indexes)}: {', '.join(p.name for p in indexes) or 'none'}"
        )
    prefix = indexes[0].with_suffix("")
    if not list(folder.glob(prefix.name + ".data-*")):
        raise ValueError(f"{folder}: {indexes[0].name} has no data file ({prefix.name}.data-00000-of-00001)")
    return str(prefix)


def tf_reader(prefix: str) -> Callable[[str], np.ndarray]:
    """``name -> array`` through TensorFlow's checkpoint reader (imported here, lazily)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise RuntimeError(
            "import-dpam reads TensorFlow checkpoints with TensorFlow's own reader, which is not "
            "installed here: pip install -r tools/tf/requirements.txt (jndlab itself never needs "
            "TensorFlow)"
        ) from None
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()

    def get(name: str) -> np.ndarray:
        if name not in shapes:
            se = sorted(k for k in shapes if k.startswith("se_") and "Adam" not in k)
            raise ValueError(
                f"{prefix}: tensor {name!r} not found (the checkpoint's se_ tensors: "
                f"{', '.join(se[:8])}{' ...' if len(se) > 8 else ''})"
            )
        return np.asarray(reader.get_tensor(name))

    return get


def state_dict_from(get: Callable[[str], np.ndarray], network: ContextAggregationNetwork) -> dict[str, torch.Tensor]:
    """The network's state dict from the TF tensors ``get(name)``.

    Raises:
        ValueError: naming the mismatch: a tensor missing, one of another shape, or a network
            parameter that no TF tensor maps to.
    """
    scopes = [f"se_conv_{i}" for i in range(len(network.convs) - 1)] + ["se_conv_last"]
    out: dict[str, torch.Tensor] = {}
    for i, scope in enumerate(scopes):
        out[f"convs.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(get(f"{scope}/weights")[0].transpose(2, 1, 0)))
        out[f"norms.{i}.beta"] = torch.from_numpy(get(f"{scope}/BatchNorm/beta"))
        out[f"norms.{i}.w0"] = torch.from_numpy(np.asarray(get(f"{scope}/w0"), np.float32).reshape(()))
        out[f"norms.{i}.w1"] = torch.from_numpy(np.asarray(get(f"{scope}/w1"), np.float32).reshape(()))
    out["output.weight"] = torch.from_numpy(np.ascontiguousarray(get("se_fc_last/weights")[0].transpose(2, 1, 0)))
    out["output.bias"] = torch.from_numpy(get("se_fc_last/biases"))
    expected = network.state_dict()
    for key, value in expected.items():
        if key not in out:
            raise ValueError(f"no TF tensor maps to the network's {key}")
        if tuple(out[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{key}: the checkpoint's tensor has shape {tuple(out[key].shape)}, "
                f"the network expects {tuple(value.shape)}"
            )
        out[key] = out[key].to(torch.float32)
    return out


def convert(
    tf_checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    reader: Callable[[str], Callable[[str], np.ndarray]] = tf_reader,
) -> dict[str, Any]:
    """Convert and write ``out`` (atomic) and ``out`` with ``.json`` (provenance); returns the provenance.

    Raises:
        FileNotFoundError: ``tf_checkpoint`` is no TensorFlow checkpoint folder or prefix.
        ValueError: a folder without exactly one checkpoint (index and data files), or tensors
            that do not fit the network (``state_dict_from``).
    """
    from se.checkpoint import build_payload, save_checkpoint
    from se.networks import DPAMSENetwork

    prefix = find_checkpoint_prefix(tf_checkpoint)
    network = DPAMSENetwork()  # the registry's "dpam_can", default config
    network.load_state_dict(state_dict_from(reader(prefix), network))
    files = sorted(Path(prefix).parent.glob(Path(prefix).name + ".*"))
    provenance = {
        **SOURCE,
        "source_files": {p.name: sha256_file(p) for p in files},
        "trained_on": TRAINED_ON,
        "converted_by": "python -m se import-dpam (se.dpam_import)",
        "input": "16 kHz mono float audio in [-1, 1] (no 16-bit scaling)",
    }
    payload = build_payload(
        network,
        loss_spec="metric:1",
        metric={"name": "DPAM (published TensorFlow loss network)", "trained_on": "human"},
        training_config={"source": "published", **SOURCE},
        seed=0,
        metrics={},
    )
    payload["provenance"] = provenance
    payload["trained_on"] = TRAINED_ON
    out = Path(out)
    save_checkpoint(payload, out)
    from perturbations.files import atomic_path

    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(provenance, indent=2) + "\n")
    os.chmod(out.with_suffix(".json"), 0o644)  # shipped in the package: readable by all, like the .pt
    return provenance


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tf-checkpoint",
        required=True,
        metavar="DIR",
        help="folder holding DPAM's se_model.ckpt.index + .data-00000-of-00001 (or the prefix)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="CKPT",
        help="the jndlab enhancer checkpoint to write (.pt); provenance goes beside it as .json",
    )


def run(args) -> int:
    provenance = convert(args.tf_checkpoint, args.out)
    print(
        f"converted {', '.join(provenance['source_files'])} into {args.out} (network dpam_can); "
        f"use it with: python -m se enhance --checkpoint {args.out} NOISY OUT"
    )
    return 0
