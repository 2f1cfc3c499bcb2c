"""Baseline distances for ``analysis.agreement``: ``fn(ref, test, sample_rate) -> float``,
larger = more different. Quality scores (SI-SDR, PESQ, STOI, ViSQOL) are negated.

``make_baselines(names)`` builds the requested ones and returns the notes of those
that cannot run here (missing package, missing weights) instead of failing: one
unavailable optional dependency must not stop a report. Nothing is downloaded;
CDPAM's weights ship inside its wheel and ViSQOL's lattice model inside its package.

Inputs are float32 mono clips at one sample rate; pairs of unequal length are
cut to the shorter (stimuli are sample-aligned by construction).
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable

import numpy as np

from perturbations.audio import resample

DistanceFn = Callable[[np.ndarray, np.ndarray, int], float]
ALL_BASELINES = ("l1", "l2", "logmel_l1", "mrstft", "sisdr", "pesq", "stoi", "visqol", "cdpam")
DEFAULT_BASELINES = ("l1", "l2", "logmel_l1", "mrstft", "sisdr", "pesq", "stoi")
SISDR_CAP_DB = 100.0  # identical clips have infinite SI-SDR; cap so the distance stays finite


class BaselineUnavailable(RuntimeError):
    """This baseline cannot run on this machine; the message says why."""


def _pair(ref, test) -> tuple[np.ndarray, np.ndarray]:
    ref, test = np.asarray(ref, np.float32).ravel(), np.asarray(test, np.float32).ravel()
    n = min(len(ref), len(test))
    if n == 0:
        raise ValueError("empty clip")
    return ref[:n], test[:n]


def _resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    return x if sr_from == sr_to else resample(x, sr_from, sr_to)


# ----------------------------------------------------------------------------- signal baselines


def l1(ref, test, sample_rate: int) -> float:
    ref, test = _pair(ref, test)
    return float(np.mean(np.abs(ref - test)))


def l2(ref, test, sample_rate: int) -> float:
    """Root-mean-square difference."""
    ref, test = _pair(ref, test)
    return float(np.sqrt(np.mean((ref.astype(np.float64) - test) ** 2)))


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int):
    import torchaudio

    n_fft = 1024 if sample_rate <= 24000 else 2048
    return torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4,
                                                n_mels=64, power=2.0)


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
    over resolutions (scaled with the sample rate; those longer than the clip are skipped)."""
    import torch

    ref, test = _pair(ref, test)
    scale = sample_rate / 16000
    total, used = 0.0, 0
    for n_fft, hop in MRSTFT_RESOLUTIONS:
        n_fft, hop = int(round(n_fft * scale)), int(round(hop * scale))
        if n_fft > len(ref):
            continue
        win = torch.hann_window(n_fft)
        spec = [torch.stft(torch.from_numpy(x), n_fft, hop, window=win, return_complex=True).abs().clamp_min(1e-7)
                for x in (ref, test)]
        sc = torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0]).clamp_min(1e-7)
        mag = (torch.log(spec[0]) - torch.log(spec[1])).abs().mean()
        total += float(sc + mag)
        used += 1
    if not used:
        raise ValueError(f"clip of {len(ref)} samples is shorter than every STFT resolution")
    return total / used


def sisdr_distance(ref, test, sample_rate: int) -> float:
    """Negated scale-invariant SDR in dB (capped at +-100 dB)."""
    ref, test = _pair(ref, test)
    ref, test = ref.astype(np.float64) - ref.mean(), test.astype(np.float64) - test.mean()
    energy = float(ref @ ref)
    if energy == 0:
        raise ValueError("silent reference")
    target = (test @ ref) / energy * ref
    noise = test - target
    nn_, tt = float(noise @ noise), float(target @ target)
    if nn_ == 0:
        return -SISDR_CAP_DB
    sdr = 10 * math.log10(max(tt, 1e-300) / nn_)
    return -float(np.clip(sdr, -SISDR_CAP_DB, SISDR_CAP_DB))


# ----------------------------------------------------------------------------- optional packages


def _pesq_fn() -> DistanceFn:
    try:
        from pesq import pesq
    except ImportError as exc:
        raise BaselineUnavailable(f"pip package 'pesq' not importable ({exc}); install jndlab[baselines]") from None

    def pesq_distance(ref, test, sample_rate: int) -> float:
        """Negated wide-band PESQ (MOS-LQO) at 16 kHz."""
        ref, test = _pair(ref, test)
        ref16, test16 = _resample(ref, sample_rate, 16000), _resample(test, sample_rate, 16000)
        return -float(pesq(16000, ref16.astype(np.float64), test16.astype(np.float64), "wb"))

    return pesq_distance


def _stoi_fn() -> DistanceFn:
    try:
        from pystoi import stoi
    except ImportError as exc:
        raise BaselineUnavailable(f"pip package 'pystoi' not importable ({exc}); install jndlab[baselines]") from None

    def stoi_distance(ref, test, sample_rate: int) -> float:
        """Negated STOI; a clip too short for STOI's frames raises (the pair is dropped)."""
        ref, test = _pair(ref, test)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # pystoi only warns when a clip is too short
            return -float(stoi(ref.astype(np.float64), test.astype(np.float64), sample_rate, extended=False))

    return stoi_distance


def _visqol_fn() -> DistanceFn:
    try:
        from visqol import VisqolApi
    except ImportError as exc:
        raise BaselineUnavailable(
            f"ViSQOL not importable ({exc}); `pip install \"visqol-python[lattice]\"` provides it") from None
    api = VisqolApi()
    try:
        api.create(mode="speech", use_lattice_model=True)
    except (ImportError, FileNotFoundError, OSError) as exc:
        raise BaselineUnavailable(f"ViSQOL speech mode with the lattice model cannot start ({exc})") from None

    def visqol_distance(ref, test, sample_rate: int) -> float:
        """Negated ViSQOL v3 speech MOS-LQO (lattice mapper) at 16 kHz."""
        ref, test = _pair(ref, test)
        ref16, test16 = _resample(ref, sample_rate, 16000), _resample(test, sample_rate, 16000)
        return -float(api.measure_from_arrays(ref16.astype(np.float64), test16.astype(np.float64), 16000).moslqo)

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


CDPAM_RATE = 22050


def _cdpam_fn() -> DistanceFn:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa/resampy import-time deprecations are not ours
            import cdpam
    except ImportError as exc:
        raise BaselineUnavailable(f"CDPAM not importable ({exc}); it needs pip cdpam, librosa and resampy") from None
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
        a = _resample(ref, sample_rate, CDPAM_RATE) * 32768.0
        b = _resample(test, sample_rate, CDPAM_RATE) * 32768.0
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = model.forward(torch.from_numpy(a[None].astype(np.float32)), torch.from_numpy(b[None].astype(np.float32)))
        return float(d.reshape(-1)[0])

    return cdpam_distance


# ----------------------------------------------------------------------------- learned metric


def learned_metric(ckpt_path, device: str = "cpu") -> DistanceFn:
    """A jndlab metric checkpoint (``model.load_metric``) as a distance function."""
    import torch

    try:
        from model import load_metric
    except ImportError as exc:
        raise BaselineUnavailable(f"the model package is not importable ({exc})") from None
    metric = load_metric(ckpt_path, device=device)

    def learned_distance(ref, test, sample_rate: int) -> float:
        ref, test = _pair(ref, test)
        with torch.no_grad():
            d = metric(torch.from_numpy(ref)[None], torch.from_numpy(test)[None], sample_rate=int(sample_rate))
        return float(d.reshape(-1)[0])

    learned_distance.__name__ = f"learned:{ckpt_path}"
    learned_distance.trained_on = getattr(metric, "trained_on", "unknown")
    return learned_distance


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
    """"l1,l2" / "all" / "" -> names, in ALL_BASELINES order; unknown names raise."""
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
    """Build the named baselines: ({name: fn} that run here, {name: note} that are skipped)."""
    fns, skipped = {}, {}
    for name in names:
        try:
            fns[name] = _FACTORIES[name]()
        except BaselineUnavailable as exc:
            skipped[name] = str(exc)
    return fns, skipped
