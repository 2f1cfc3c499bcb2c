"""The DPAM loss network on raw waveforms, with a sound distance (LPIPS-style API).

``DPAMMetric(**config)`` is the whole API: the constructor takes plain values, and
``forward(ref, est)`` returns the distance. Only torch is imported here, so a
checkpoint rebuilds the module without any training code.

Architecture (Manocha et al. 2020): 14 Conv1d layers, kernel 3, stride 2 except the
last, 32·2^(i//5) channels (32×5, 64×5, 128×4), normalisation, LeakyReLU 0.2, dropout.
Distance: d(x, y) = Σ_l mean_{c,t} w_{l,c} · |φ_l(x) − φ_l(y)|_{c,t}.

Choices that differ from DPAM, and why:
- Normalisation is GroupNorm with one group (statistics over channels and time of each
  example). DPAM's BatchNorm mixes examples: φ(x) then depends on what else is in the
  batch, so d(x, x) ≠ 0 in training and the batch-1 case is ill-defined. Per-example
  statistics work for batch 1 and make φ(x) a function of x alone.
- The per-channel weights are w = softplus(raw) > 0. DPAM left them unconstrained, so
  its "distance" could go negative. softplus needs no projection step in the trainer
  (LPIPS clamps after each step instead) and keeps the gradient smooth.
- Dropout uses one mask for both inputs of a pair, so identical inputs keep d = 0 even
  in training mode and dropout only perturbs *which* features are compared.
- The judgment head is monotone in the distance: logit = softplus(a)·(log(d + ε) − b).
  A larger distance can never mean "more likely the same", so accuracy, ROC-AUC and
  the ranking of the distance agree. It is used in training only.

The published DPAM networks (``model.load_metric("dpam")``, see ``model.dpam_import``)
run through the same class with config values that reproduce their TensorFlow graph
(``DPAM_PORT_CONFIG``): ``norm="instance"`` (each signal normalised by its own
per-channel mean and biased variance over time, epsilon ``norm_eps`` = 0.001, then a
learned offset and no scale: slim.batch_norm in training mode on a batch of one),
``padding="tf_same"`` (TensorFlow's SAME: output length ceil(L / stride), total padding
max((out − 1)·stride + k − L, 0) with the smaller half on the left), ``conv_bias=False``,
``input_scale=32768`` (float audio in [-1, 1] to 16-bit units, not rounded, so it stays
differentiable), ``sample_rate=22050`` and ``weight_param="abs"`` (the published
per-channel weights are signed; the distance uses |w|).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_CONFIG: dict = {
    "sample_rate": 16000,
    "n_layers": 14,
    "base_channels": 32,
    "channels_double_every": 5,
    "kernel_size": 3,
    "negative_slope": 0.2,
    "norm": "group",
    "dropout": 0.1,
    "normalize_features": False,
    "norm_eps": 1e-5,
    "padding": "symmetric",
    "conv_bias": True,
    "input_scale": 1.0,
    "weight_param": "softplus",
}
# The published DPAM networks (Manocha et al. 2020, pranaymanocha/PerceptualAudio), as their graph computes
DPAM_PORT_CONFIG: dict = {
    **DEFAULT_CONFIG,
    "sample_rate": 22050,
    "norm": "instance",
    "norm_eps": 1e-3,
    "padding": "tf_same",
    "conv_bias": False,
    "input_scale": 32768.0,
    "weight_param": "abs",
    "dropout": 0.0,
}
NORMS = ("group", "instance", "none")
PADDINGS = ("symmetric", "tf_same")
WEIGHT_PARAMS = ("softplus", "abs")
_LOG_EPS = 1e-8  # inside log(d + eps) of the head: d = 0 stays finite
_UNIT_EPS = 1e-10  # unit-normalised features: silent frames stay finite


def _softplus_inverse(y: float) -> float:
    return math.log(math.expm1(y))


class InstanceOffsetNorm(nn.Module):
    """Per-signal, per-channel normalisation over time with a learned offset and no scale.

    ``(batch, channels, frames) -> same``: y = (x − mean_t x) / sqrt(var_t x + eps) + beta,
    biased variance. It is what DPAM's ``slim.batch_norm`` (training mode, center=True,
    scale=False) computes on a batch of one signal; here every signal of a batch has its
    own statistics, so a batch gives the same per-pair result as single signals. Uses
    ``torch.nn.functional.instance_norm``; a single frame (which it refuses) normalises to 0
    and then + beta, as TensorFlow's batch norm does.
    """

    def __init__(self, channels: int, eps: float = 1e-3):
        super().__init__()
        self.eps = float(eps)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype)
        if x.shape[-1] > 1:  # torch's fused kernel (biased variance), 2-3x faster than the ops below
            return F.instance_norm(x, weight=None, bias=bias, eps=self.eps)
        return (x - x.mean(dim=-1, keepdim=True)) + bias[:, None]  # one frame: zero, then the offset

    def extra_repr(self) -> str:
        return f"{self.bias.numel()}, eps={self.eps}"


def tf_same_padding(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding ``(left, right)`` for a 1-D input of ``length`` samples.

    Output length ceil(length / stride); total padding max((out − 1)·stride + k − length, 0),
    the smaller half on the left (TensorFlow's ``GetWindowedOutputSize`` rule).
    """
    out = -(-length // stride)
    total = max((out - 1) * stride + kernel_size - length, 0)
    return total // 2, total - total // 2


class DPAMMetric(nn.Module):
    """DPAM distance ``(ref, est) -> d``; shapes ``(samples,) -> ()`` or ``(batch, samples) -> (batch,)``.

    sample_rate: the rate the network was built for (Hz); ``forward`` resamples other rates.
    normalize_features: LPIPS-style: unit-normalise each layer's features over channels
        at every time step before differencing.
    dropout: probability; one mask is shared by the two inputs of a pair.
    norm: ``"group"`` (GroupNorm, one group), ``"instance"`` (per-signal per-channel
        statistics, offset only: ``InstanceOffsetNorm``) or ``"none"``; ``norm_eps`` its epsilon.
    padding: ``"symmetric"`` (kernel // 2 zeros on each side) or ``"tf_same"`` (TensorFlow's
        SAME padding, asymmetric with stride 2: ``tf_same_padding``).
    conv_bias: whether the convolutions have a bias.
    input_scale: the waveform is multiplied by this before the first layer (32768 turns
        float audio in [-1, 1] into 16-bit units; no rounding, so gradients flow).
    weight_param: how the per-channel weights are stored: ``"softplus"`` (w = softplus(raw))
        or ``"abs"`` (raw stored as is, the distance uses |raw|).

    Raises ``ValueError`` for a bad config value; ``forward`` raises ``TypeError`` for
    integer or non-tensor audio and ``ValueError`` for bad shapes.
    """

    # set by ``model.load_metric`` from the checkpoint (absent on a module built directly)
    trained_on: str
    perceptual_validity: str
    variant: str | None
    metric_name: str
    provenance: dict[str, Any]

    def __init__(
        self,
        sample_rate: int = 16000,
        n_layers: int = 14,
        base_channels: int = 32,
        channels_double_every: int = 5,
        kernel_size: int = 3,
        negative_slope: float = 0.2,
        norm: str = "group",
        dropout: float = 0.1,
        normalize_features: bool = False,
        norm_eps: float = 1e-5,
        padding: str = "symmetric",
        conv_bias: bool = True,
        input_scale: float = 1.0,
        weight_param: str = "softplus",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if weight_param not in WEIGHT_PARAMS:
            raise ValueError(f"weight_param must be one of {WEIGHT_PARAMS}, got {weight_param!r}")
        if not (float(norm_eps) > 0 and math.isfinite(float(norm_eps))):
            raise ValueError(f"norm_eps must be positive, got {norm_eps}")
        if not (float(input_scale) > 0 and math.isfinite(float(input_scale))):
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if n_layers < 1 or base_channels < 1 or kernel_size < 1 or channels_double_every < 1:
            raise ValueError("n_layers, base_channels, kernel_size and channels_double_every must be positive")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.config: dict[str, Any] = {
            "sample_rate": int(sample_rate),
            "n_layers": int(n_layers),
            "base_channels": int(base_channels),
            "channels_double_every": int(channels_double_every),
            "kernel_size": int(kernel_size),
            "negative_slope": float(negative_slope),
            "norm": norm,
            "dropout": float(dropout),
            "normalize_features": bool(normalize_features),
            "norm_eps": float(norm_eps),
            "padding": padding,
            "conv_bias": bool(conv_bias),
            "input_scale": float(input_scale),
            "weight_param": weight_param,
        }
        self.sample_rate = int(sample_rate)
        self.padding = padding
        self.input_scale = float(input_scale)
        self.weight_param = weight_param
        self.normalize_features = bool(normalize_features)
        self.dropout = float(dropout)
        self.negative_slope = float(negative_slope)
        # set by the trainer (torch.Generator on the model's device): no global random state
        self.dropout_generator: torch.Generator | None = None

        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.raw_weights = nn.ParameterList()
        channels_in = 1
        for i in range(n_layers):
            channels = base_channels * 2 ** (i // channels_double_every)
            stride = 1 if i == n_layers - 1 else 2
            self.convs.append(
                nn.Conv1d(
                    channels_in,
                    channels,
                    kernel_size,
                    stride=stride,
                    padding=kernel_size // 2 if padding == "symmetric" else 0,
                    bias=conv_bias,
                )
            )
            if norm == "group":
                self.norms.append(nn.GroupNorm(1, channels, eps=norm_eps))
            elif norm == "instance":
                self.norms.append(InstanceOffsetNorm(channels, eps=norm_eps))
            else:
                self.norms.append(nn.Identity())
            # w starts at 1/n_layers: every layer contributes equally at init
            init = _softplus_inverse(1.0 / n_layers) if weight_param == "softplus" else 1.0 / n_layers
            self.raw_weights.append(nn.Parameter(torch.full((channels,), init)))
            channels_in = channels
        # monotone judgment head, training only: logit = softplus(a) * (log(d + eps) - b)
        self.head_raw_slope = nn.Parameter(torch.tensor(_softplus_inverse(1.0)))
        self.head_offset = nn.Parameter(torch.tensor(0.0))

    # -- parts ---------------------------------------------------------------------------
    def backbone_parameters(self):
        """Conv and normalisation parameters (frozen in the ``linear`` regime)."""
        return [p for m in (self.convs, self.norms) for p in m.parameters()]

    def layer_weights(self) -> list[torch.Tensor]:
        """The non-negative per-channel weights w_l (softplus(raw) or |raw|)."""
        if self.weight_param == "abs":
            return [raw.abs() for raw in self.raw_weights]
        return [F.softplus(raw) for raw in self.raw_weights]

    @property
    def embedding_channels(self) -> int:
        """Channels of the last layer: the width of ``pooled_embedding``."""
        return self._conv(-1).out_channels

    def _conv(self, i: int) -> nn.Conv1d:
        conv = self.convs[i]
        if not isinstance(conv, nn.Conv1d):  # __init__ builds every layer as a Conv1d
            raise TypeError(f"layer {i} is a {type(conv).__name__}, not a Conv1d")
        return conv

    def _frames(self, i: int, length: int) -> int:
        conv = self._conv(i)
        if self.padding == "tf_same":
            return -(-length // conv.stride[0])
        if isinstance(conv.padding, str):  # __init__ gives the symmetric convs an int padding
            raise TypeError(f"layer {i} has padding {conv.padding!r}, not a number of samples")
        return (length + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1

    def _layer(self, i: int, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self._conv(i), self.norms[i]
        if self.padding == "tf_same":
            x = F.pad(x, tf_same_padding(x.shape[-1], conv.kernel_size[0], conv.stride[0]))
        return F.leaky_relu(norm(conv(x)), self.negative_slope)

    def features(self, audio: torch.Tensor, dropout_masks: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """φ_l(audio) for every layer: list of ``(batch, channels_l, frames_l)``.

        ``audio``: ``(batch, samples)`` float at the model's rate, before ``input_scale``.
        """
        x = audio.unsqueeze(1)
        out = []
        for i in range(len(self.convs)):
            if i == 0 and self.input_scale != 1.0:
                # 16-bit units overflow float16: the scaled first layer runs in float32 even under
                # autocast; its normalisation brings the features back to unit scale
                with torch.autocast(x.device.type, enabled=False):
                    x = self._layer(0, (x if x.dtype == torch.float64 else x.float()) * self.input_scale)
            else:
                x = self._layer(i, x)
            if dropout_masks is not None:
                x = x * dropout_masks[i]
            out.append(x)
        return out

    def _shared_dropout_masks(self, batch: int, num_samples: int, like: torch.Tensor) -> list[torch.Tensor] | None:
        if not (self.training and self.dropout > 0):
            return None
        keep = 1.0 - self.dropout
        masks, frames = [], num_samples
        for i in range(len(self.convs)):
            frames = self._frames(i, frames)
            mask = torch.empty(batch, self._conv(i).out_channels, frames, device=like.device, dtype=like.dtype)
            mask.bernoulli_(keep, generator=self.dropout_generator)
            masks.append(torch.cat([mask, mask]) / keep)  # the same mask for ref and est
        return masks

    def pooled_embedding(self, audio: torch.Tensor) -> torch.Tensor:
        """Time-averaged last-layer features ``(batch, channels)``: input to pretext heads."""
        return self.features(self._prepare(audio, None)[0])[-1].mean(dim=-1)

    # -- the metric ------------------------------------------------------------------------
    def _prepare(self, audio: torch.Tensor, sample_rate: int | None) -> tuple[torch.Tensor, bool]:
        if not torch.is_tensor(audio):
            raise TypeError(f"expected a torch.Tensor, got {type(audio).__name__}")
        if not audio.is_floating_point():
            raise TypeError(
                f"expected float audio in [-1, 1], got a {audio.dtype} tensor: convert integer PCM "
                f"first (int16: x.float() / 32768); the metric scales to 16-bit units itself"
            )
        if audio.ndim not in (1, 2):
            raise ValueError(f"expected audio of shape (samples,) or (batch, samples), got {tuple(audio.shape)}")
        if audio.shape[-1] == 0:
            raise ValueError("expected at least one sample, got empty audio")
        scalar = audio.ndim == 1
        audio = audio.unsqueeze(0) if scalar else audio
        if sample_rate is not None and int(sample_rate) != self.sample_rate:
            import torchaudio.functional as AF  # only where a caller asks for another rate

            audio = AF.resample(audio, int(sample_rate), self.sample_rate)
        return audio, scalar

    def forward(self, ref: torch.Tensor, est: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Distance ≥ 0 between float waveforms in [-1, 1].

        ``ref``, ``est``: ``(samples,)`` or ``(batch, samples)``, same shape; returns ``()`` or
        ``(batch,)``. ``sample_rate``: the rate of the inputs (Hz), default the model's own
        (``self.sample_rate``); another rate is resampled with ``torchaudio.functional.resample``.
        Raises ``TypeError`` for integer tensors, ``ValueError`` for bad or unequal shapes.
        """
        param = self.raw_weights[0]
        ref, scalar = self._prepare(ref.to(param.device) if torch.is_tensor(ref) else ref, sample_rate)
        est, _ = self._prepare(est.to(param.device) if torch.is_tensor(est) else est, sample_rate)
        if ref.shape != est.shape:
            raise ValueError(f"ref and est must have the same shape, got {tuple(ref.shape)} and {tuple(est.shape)}")
        batch = ref.shape[0]
        both = torch.cat([ref, est]).to(param.dtype)  # autocast, when on, lowers the convs itself
        masks = self._shared_dropout_masks(batch, ref.shape[-1], both)
        total = both.new_zeros(batch, dtype=torch.float32)
        for phi, w in zip(self.features(both, masks), self.layer_weights()):
            phi = phi.float()  # the difference in float32 even under AMP
            if self.normalize_features:
                phi = phi / torch.sqrt((phi * phi).sum(dim=1, keepdim=True) + _UNIT_EPS)
            a, b = phi[:batch], phi[batch:]
            total = total + (w.float()[None, :, None] * (a - b).abs()).mean(dim=(1, 2))
        # Identical inputs give exactly 0 whatever the backend's arithmetic (the subgradient
        # of |·| at 0 is 0, so the gradient is unchanged).
        same = (ref == est).all(dim=-1)
        total = torch.where(same, torch.zeros_like(total), total)
        return total[0] if scalar else total

    def judgment_logit(self, distance: torch.Tensor) -> torch.Tensor:
        """Logit of P(different) from the distance (training only)."""
        return F.softplus(self.head_raw_slope) * (torch.log(distance + _LOG_EPS) - self.head_offset)

    def prob_different(self, ref: torch.Tensor, est: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        return torch.sigmoid(self.judgment_logit(self.forward(ref, est, sample_rate)))

    def extra_repr(self) -> str:
        # load_metric sets these from the checkpoint: the repr then says which metric this is
        known = {k: getattr(self, k) for k in ("metric_name", "variant", "trained_on") if getattr(self, k, None)}
        return ", ".join(f"{k}={v}" for k, v in {**known, **self.config}.items())
