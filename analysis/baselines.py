"""Baseline distances for ``analysis.agreement``, and the objective quality scores of jndlab.

Distances: ``fn(ref, test, sample_rate) -> float``, larger = more different, for float32
mono clips (samples,) at one sample rate in Hz; pairs of unequal length are cut to the
shorter (stimuli are sample-aligned by construction). Quality scores (SI-SDR, PESQ, STOI,
ViSQOL) are negated to be distances.

Quality scores (higher = better), the one set of wrappers: ``si_sdr_db``, ``pesq_wb`` and
``stoi`` (``se.scores`` evaluates enhancement with them).

``make_baselines(names)`` builds the requested distances and returns the notes of those
that cannot run here (missing package, missing weights) instead of failing: one
unavailable optional dependency must not stop a report. Nothing is downloaded;
CDPAM's weights ship inside its wheel and ViSQOL's lattice model inside its package.

A learned metric is any callable ``metric(ref, test, sample_rate=...)`` on torch tensors
(1, samples): ``metric_distance`` scores it like a baseline, the way LPIPS scores any
network (``lpips.LPIPS``, Zhang et al. 2018). The constructor that loads a jndlab
checkpoint lives with the model (``model.score.learned_distance``): analysis does not
import model.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from perturbations.audio import resample

__all__ = [
    "ALL_BASELINES",
    "DEFAULT_BASELINES",
    "PESQ_RATE",
    "BaselineUnavailable",
    "DistanceFn",
    "l1",
    "l2",
    "logmel_l1",
    "make_baselines",
    "metric_distance",
    "mrstft",
    "parse_names",
    "pesq_wb",
    "si_sdr_db",
    "sisdr_distance",
    "stoi",
]

DistanceFn = Callable[[np.ndarray, np.ndarray, int], float]
ALL_BASELINES = ("l1", "l2", "logmel_l1", "mrstft", "sisdr", "pesq", "stoi", "visqol", "cdpam")
DEFAULT_BASELINES = ("l1", "l2", "logmel_l1", "mrstft", "sisdr", "pesq", "stoi")
SISDR_CAP_DB = 100.0  # identical clips have infinite SI-SDR; cap so the distance stays finite
PESQ_RATE = 16000  # wide-band PESQ (ITU-T P.862.2) is defined at 16 kHz
VISQOL_RATE = 16000  # ViSQOL v3's speech mode
CDPAM_RATE = 22050


class BaselineUnavailable(RuntimeError):
    """This baseline cannot run on this machine; the message says why."""


def _pair(ref, test) -> tuple[np.ndarray, np.ndarray]:
    ref, test = np.asarray(ref, np.float32).ravel(), np.asarray(test, np.float32).ravel()
    n = min(len(ref), len(test))
    if n == 0:
        raise ValueError("empty clip")
    return ref[:n], test[:n]


def _same_shape(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference, estimate = np.asarray(reference, np.float64), np.asarray(estimate, np.float64)
    if reference.shape != estimate.shape or reference.ndim != 1:
        raise ValueError(
            f"reference and estimate must be 1-D of one length, got {reference.shape} and {estimate.shape}"
        )
    return reference, estimate


# ----------------------------------------------------------------------------- quality scores (higher = better)


def si_sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio of ``estimate`` against ``reference``, in dB.

    Both (samples,), any float dtype, computed in float64 with their means removed; energies
    are floored at 1e-20, so identical clips give a large finite value (~200 dB). NaN for a
    silent reference. Source: Le Roux, Wisdom, Erdogan & Hershey 2019, "SDR - half-baked or
    well done?", ICASSP. Raises ValueError for shapes that differ or are not 1-D.
    """
    s, e = _same_shape(reference, estimate)
    s, e = s - s.mean(), e - e.mean()
    energy = float(np.dot(s, s))
    if energy <= 0:
        return math.nan
    target = (float(np.dot(e, s)) / energy) * s
    noise = e - target
    return 10.0 * math.log10(max(float(np.dot(target, target)), 1e-20) / max(float(np.dot(noise, noise)), 1e-20))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (MOS-LQO, about 1.0-4.6) of ``estimate`` against ``reference``.

    Both (samples,) at ``sample_rate`` Hz; other rates than 16 kHz are resampled to it
    (``perturbations.audio.resample``, float64). ITU-T P.862.2 through the ``pesq`` package
    (ludlows/PESQ). Raises ImportError without that package, ValueError for shapes that
    differ, and whatever PESQ raises when it refuses a signal (e.g. no utterances detected
    in silence): callers decide (``se.scores`` records NaN, ``analysis.agreement`` drops
    the pair with a note).
    """
    from pesq import pesq

    reference, estimate = _same_shape(reference, estimate)
    if sample_rate != PESQ_RATE:
        reference = resample(reference, sample_rate, PESQ_RATE, dtype=np.float64)
        estimate = resample(estimate, sample_rate, PESQ_RATE, dtype=np.float64)
    return float(pesq(PESQ_RATE, reference, estimate, "wb"))


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (0-1) of ``estimate`` against ``reference``.

    Both (samples,) at ``sample_rate`` Hz (pystoi resamples to 10 kHz itself). Taal,
    Hendriks, Heusdens & Jensen 2011, IEEE TASLP 19(7), through the ``pystoi`` package
    (mpariente/pystoi), not the extended variant. pystoi only warns when a clip is shorter
    than its 30 frames (the value is then meaningless): callers choose to raise or ignore.
    Raises ImportError without pystoi, ValueError for shapes that differ.
    """
    from pystoi import stoi as pystoi_stoi

    reference, estimate = _same_shape(reference, estimate)
    return float(pystoi_stoi(reference, estimate, sample_rate, extended=False))


# ----------------------------------------------------------------------------- signal baselines


def l1(ref, test, sample_rate: int) -> float:
    """Mean absolute sample difference."""
    ref, test = _pair(ref, test)
    return float(np.mean(np.abs(ref - test)))


def l2(ref, test, sample_rate: int) -> float:
    """Root-mean-square sample difference."""
    ref, test = _pair(ref, test)
    return float(np.sqrt(np.mean((ref.astype(np.float64) - test) ** 2)))


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int):
    import torchaudio

    n_fft = 1024 if sample_rate <= 24000 else 2048
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=64, power=2.0
    )


def logmel_l1(ref, test, sample_rate: int) -> float:
    """Mean |log-mel(ref) - log-mel(test)| (64 mel bands, natural log of power + 1e-5)."""
    import torch

    ref, test = _pair(ref, test)
    mel = _mel(int(sample_rate))
    with torch.no_grad():
        a = torch.log(mel(torch.from_numpy(ref)) + 1e-5)
        b = torch.log(mel(torch.from_numpy(test)) + 1e-5)
    return float((a - b).abs().mean())


MRSTFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) at 16 kHz


def mrstft(ref, test, sample_rate: int) -> float:
    """Multi-resolution STFT distance: spectral convergence + log-magnitude L1, averaged
    over resolutions (scaled with the sample rate; those longer than the clip are skipped;
    Yamamoto, Song & Kim 2020, Parallel WaveGAN, ICASSP). Raises ValueError for a clip
    shorter than every resolution."""
    import torch

    ref, test = _pair(ref, test)
    scale = sample_rate / 16000
    total, used = 0.0, 0
    for n_fft, hop in MRSTFT_RESOLUTIONS:
        n_fft, hop = int(round(n_fft * scale)), int(round(hop * scale))
        if n_fft > len(ref):
            continue
        win = torch.hann_window(n_fft)
        spec = [
            torch.stft(torch.from_numpy(x), n_fft, hop, window=win, return_complex=True).abs().clamp_min(1e-7)
            for x in (ref, test)
        ]
        sc = torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0]).clamp_min(1e-7)
        mag = (torch.log(spec[0]) - torch.log(spec[1])).abs().mean()
        total += float(sc + mag)
        used += 1
    if not used:
        raise ValueError(f"clip of {len(ref)} samples is shorter than every STFT resolution")
    return total / used


def sisdr_distance(ref, test, sample_rate: int) -> float:
    """Negated ``si_sdr_db``, capped at +-100 dB. Raises ValueError for a silent reference."""
    ref, test = _pair(ref, test)
    sdr = si_sdr_db(ref, test)
    if math.isnan(sdr):
        raise ValueError("silent reference")
    return -float(np.clip(sdr, -SISDR_CAP_DB, SISDR_CAP_DB))


# ----------------------------------------------------------------------------- optional packages


def _require(module: str, why: str) -> ModuleType:
    """``import module``, or BaselineUnavailable with ``why`` and the import error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa/resampy import-time deprecations are not ours
            return importlib.import_module(module)
    except ImportError as exc:
        raise BaselineUnavailable(f"{why} ({exc})") from None


def _pesq_fn() -> DistanceFn:
    _require("pesq", "pip package 'pesq' not importable; install jndlab[baselines]")

    def pesq_distance(ref, test, sample_rate: int) -> float:
        """Negated ``pesq_wb``."""
        return -pesq_wb(*_pair(ref, test), sample_rate)

    return pesq_distance


def _stoi_fn() -> DistanceFn:
    _require("pystoi", "pip package 'pystoi' not importable; install jndlab[baselines]")

    def stoi_distance(ref, test, sample_rate: int) -> float:
        """Negated ``stoi``; a clip too short for STOI's frames raises (the pair is dropped)."""
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # pystoi only warns when a clip is too short
            return -stoi(*_pair(ref, test), sample_rate)

    return stoi_distance


def _visqol_fn() -> DistanceFn:
    visqol = _require("visqol", 'ViSQOL not importable; `pip install "visqol-python[lattice]"` provides it')
    api = visqol.VisqolApi()
    try:
        api.create(mode="speech", use_lattice_model=True)
    except (ImportError, FileNotFoundError, OSError) as exc:
        raise BaselineUnavailable(f"ViSQOL speech mode with the lattice model cannot start ({exc})") from None

    def visqol_distance(ref, test, sample_rate: int) -> float:
        """Negated ViSQOL v3 speech MOS-LQO (lattice mapper) at 16 kHz (Chinen et al. 2020, QoMEX)."""
        ref, test = _pair(ref, test)
        ref16 = resample(ref, sample_rate, VISQOL_RATE, dtype=np.float64)
        test16 = resample(test, sample_rate, VISQOL_RATE, dtype=np.float64)
        return -float(api.measure_from_arrays(ref16, test16, VISQOL_RATE).moslqo)

    return visqol_distance


@contextlib.contextmanager
def _torch_load_full():
    """CDPAM's wheel pickles a dict with its weights, which torch >= 2.6 refuses under the
    default weights_only=True. Allow full unpickling of that one trusted file only while
    its constructor runs."""
    import torch

    original = torch.load
    torch.load = functools.partial(original, weights_only=False)
    try:
        yield
    finally:
        torch.load = original


def _cdpam_fn() -> DistanceFn:
    cdpam = _require("cdpam", "CDPAM not importable; it needs pip cdpam, librosa and resampy")
    import torch

    try:
        with _torch_load_full(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = cdpam.CDPAM(dev="cpu")
    except (FileNotFoundError, OSError, RuntimeError, KeyError) as exc:
        raise BaselineUnavailable(f"CDPAM weights could not be loaded from its wheel ({exc})") from None

    def cdpam_distance(ref, test, sample_rate: int) -> float:
        """CDPAM (Manocha et al. 2021) at 22.05 kHz on int16-scaled audio, CPU."""
        ref, test = _pair(ref, test)
        a = resample(ref, sample_rate, CDPAM_RATE) * 32768.0
        b = resample(test, sample_rate, CDPAM_RATE) * 32768.0
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = model.forward(
                torch.from_numpy(a[None].astype(np.float32)), torch.from_numpy(b[None].astype(np.float32))
            )
        return float(d.reshape(-1)[0])

    return cdpam_distance


# ----------------------------------------------------------------------------- learned metrics


def metric_distance(metric: Callable[..., Any], *, name: str | None = None) -> DistanceFn:
    """Any metric callable as a baseline distance: LPIPS-style scoring of whatever is passed in.

    ``metric(ref, test, sample_rate=int)`` takes torch tensors (1, samples) (float32, moved
    to the device of the metric's first parameter when it has parameters) and returns the
    distance as a tensor or array with one element, larger = more different; it runs under
    ``torch.no_grad``. The returned function carries ``__name__`` (``name``, else the
    metric's ``metric_name``, ``__name__`` or class name) and ``trained_on`` (the metric's,
    else "unknown").
    ``model.score.learned_distance`` builds one from a jndlab checkpoint.
    Raises nothing itself; the metric's own errors drop a pair in ``analysis.agreement``.
    """
    import torch

    params = getattr(metric, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    device = first.device if first is not None else torch.device("cpu")

    def distance(ref, test, sample_rate: int) -> float:
        ref, test = _pair(ref, test)
        with torch.no_grad():
            d = metric(
                torch.from_numpy(ref)[None].to(device),
                torch.from_numpy(test)[None].to(device),
                sample_rate=int(sample_rate),
            )
        if isinstance(d, torch.Tensor):
            d = d.detach().float().cpu().numpy()
        return float(np.asarray(d).reshape(-1)[0])

    distance.__name__ = (
        name or getattr(metric, "metric_name", None) or getattr(metric, "__name__", None) or type(metric).__name__
    )
    distance.trained_on = getattr(metric, "trained_on", "unknown")  # type: ignore[attr-defined]
    return distance


# ----------------------------------------------------------------------------- registry


_FACTORIES: dict[str, Callable[[], DistanceFn]] = {
    "l1": lambda: l1,
    "l2": lambda: l2,
    "logmel_l1": lambda: logmel_l1,
    "mrstft": lambda: mrstft,
    "sisdr": lambda: sisdr_distance,
    "pesq": _pesq_fn,
    "stoi": _stoi_fn,
    "visqol": _visqol_fn,
    "cdpam": _cdpam_fn,
}


def parse_names(spec: str | None) -> list[str]:
    """ "l1,l2" / "all" / "none" / "" -> names, in ALL_BASELINES order; None -> DEFAULT_BASELINES.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if spec is None:
        return list(DEFAULT_BASELINES)
    spec = spec.strip()
    if spec in ("", "none"):
        return []
    if spec == "all":
        return list(ALL_BASELINES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in _FACTORIES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(ALL_BASELINES)} or 'all'")
    return [n for n in ALL_BASELINES if n in names]


def make_baselines(names) -> tuple[dict[str, DistanceFn], dict[str, str]]:
    """Build the named baselines: ({name: fn} that run here, {name: note} that are skipped).

    Raises KeyError for a name ``parse_names`` would refuse; an unavailable one is skipped.
    """
    fns, skipped = {}, {}
    for name in names:
        try:
            fns[name] = _FACTORIES[name]()
        except BaselineUnavailable as exc:
            skipped[name] = str(exc)
    return fns, skipped
