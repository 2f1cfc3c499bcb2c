"""jndlab se: speech enhancement trained with the learned metric (DPAM's SE experiment).

    from se import load_enhancer, Enhancer, build_loss
    net = load_enhancer("runs/se/best.pt")                       # eval mode, rebuilt from its config
    dpam = load_enhancer("dpam-se")                              # DPAM's published SE model (shipped, MIT)
    clean_est = Enhancer(net).enhance(noisy, sample_rate=16000)  # chunked overlap-add, any rate
    loss = build_loss("metric:1,l1:1", sample_rate=16000, metric_checkpoint="runs/dpam/best.pt")

    from se import preference_share
    preference_share(["b", "a", "b", "tie"]).describe()          # share of b, Clopper-Pearson CI, binomial p

Modules: networks (CAN, DPAM's SE network ``dpam_can`` + registry), dpam_import (the
TensorFlow converter, ``python -m se import-dpam``; TensorFlow imported there only),
losses, data, trainer, enhance, evaluate, scores, checkpoint, plots, preference (offline simulated A/B test of two output folders; its
statistics live in analysis.pairwise), ab_test (the A/B listening test of two systems in the
web app); ``python -m se --help`` for the commands.
"""

from __future__ import annotations

import importlib

# name -> module; imported on first use, so the process-pool workers of se.evaluate
# (which import se.scores) do not pay for torch
_EXPORTS = {
    "ContextAggregationNetwork": "se.networks",
    "build_network": "se.networks",
    "register": "se.networks",
    "Enhancer": "se.enhance",
    "build_loss": "se.losses",
    "parse_loss_spec": "se.losses",
    "load_enhancer": "se.checkpoint",
    "preference_share": "analysis.pairwise",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'se' has no attribute {name!r}")
