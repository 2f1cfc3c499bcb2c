"""Every family: level 0 ≈ identity, monotone ladders, alignment, determinism, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.signal import stft

from perturbations.registry import available_families, get_family
from perturbations.stimulus import make_stimulus

FAMILIES = available_families()
LEVELS = (0, 25, 50, 75, 100)
# (param, +1 if it grows with level / -1 if it shrinks) for each family's physical parameter
PHYSICAL = {
    "noise": [("snr_db", -1)],
    "reverb": [("rt60_target_s", +1), ("drr_db", -1)],
    "mp3": [("bitrate_target_kbps", -1), ("bitrate_kbps", -1)],
    "eq": [("abs_gain_db", +1)],
    "lowpass": [("cutoff_hz", -1)],
    "clipping": [("threshold_db", -1)],
    "mulaw": [("bits", -1)],
}
# minimum SNR (dB) of the level-0 output against the input; MP3's is its waveform floor
LEVEL0_MIN_SNR_DB = {
    "noise": 49.9,
    "reverb": 35,
    "mp3": 20,
    "eq": 100,
    "lowpass": 25,
    "clipping": 100,
    "mulaw": 70,
    "chain": 18,
}


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((test.astype(np.float64) - ref) ** 2), 1e-300)))


def log_spectral_distance(reference: np.ndarray, test: np.ndarray, sample_rate: int) -> float:
    """Mean |difference| of log power spectrograms in dB, floored 80 dB below the reference's max."""
    _, _, ref = stft(reference.astype(np.float64), sample_rate, nperseg=512)
    _, _, tst = stft(test.astype(np.float64), sample_rate, nperseg=512)
    p_ref, p_tst = np.abs(ref) ** 2, np.abs(tst) ** 2
    floor = p_ref.max() * 1e-8
    return float(np.mean(np.abs(10 * np.log10(p_tst + floor) - 10 * np.log10(p_ref + floor))))


def xcorr_lag(reference: np.ndarray, test: np.ndarray) -> int:
    n = len(reference) + len(test)
    cc = np.fft.irfft(np.fft.rfft(test, n) * np.conj(np.fft.rfft(reference, n)), n)
    lag = int(np.argmax(cc))
    return lag if lag < n // 2 else lag - n


def physical(name: str, params: dict, key: str) -> float:
    if key == "abs_gain_db":
        return max(abs(v) for k, v in params.items() if k.startswith("gain_"))
    return params[key]


def test_registry_lists_every_family():
    assert set(FAMILIES) == {"noise", "reverb", "mp3", "eq", "lowpass", "clipping", "mulaw", "chain"}
    for name in FAMILIES:
        family = get_family(name)
        assert family.name == name and family.category and family.description
        assert family.parameters, name


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown family 'flanger'.*noise.*mp3"):
        get_family("flanger")
    with pytest.raises(ValueError, match="unknown family option.*nois_dir; valid options:.*noise_dir"):
        get_family("mp3", nois_dir="x")
    # options are shared by every family: one meant for another family is ignored
    assert get_family("mp3", noise_types=["pink"]).name == "mp3"
    assert get_family("chain", noise_types=["pink"]).pool["noise"].noise_types == ("pink",)
    with pytest.raises(ValueError, match="unknown mp3 backend"):
        get_family("mp3", backend="wmp")


@pytest.mark.parametrize("name", FAMILIES)
def test_level_0_is_near_identity(name, speech_16k, sample_rate):
    out, params = get_family(name)(speech_16k, sample_rate, 0, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == speech_16k.shape
    assert snr_db(speech_16k, out) >= LEVEL0_MIN_SNR_DB[name], params
    json.dumps(params)  # params go into the manifest as JSON


@pytest.mark.parametrize("name", sorted(PHYSICAL))
def test_physical_parameter_is_monotone_in_level(name, sample_rate):
    family = get_family(name)
    levels = np.linspace(0, 100, 11)
    for key, direction in PHYSICAL[name]:
        values = [
            physical(
                name,
                family.sample_params(lv, np.random.default_rng(3), sample_rate=sample_rate, num_samples=sample_rate),
                key,
            )
            for lv in levels
        ]
        steps = direction * np.diff(values)
        assert np.all(steps >= 0), (key, values)
        assert direction * (values[-1] - values[0]) > 0, (key, values)


@pytest.mark.parametrize("name", FAMILIES)
def test_spectral_distance_is_monotone_in_level(name, speech_16k, sample_rate):
    family = get_family(name)
    distances = [
        np.mean(
            [
                log_spectral_distance(speech_16k, make_stimulus(family, speech_16k, sample_rate, lv, s)[0], sample_rate)
                for s in range(3)
            ]
        )
        for lv in LEVELS
    ]
    # MP3 at 16 kHz caps at 160 kbps, so its first rungs (160, 128 kbps) are equally transparent:
    # allow a plateau of 2 % of the ladder's range, never a real step back.
    tolerance = 0.02 * (distances[-1] - distances[0])
    assert np.all(np.diff(distances) > -tolerance), distances
    assert distances[-1] > distances[0] + 3.0, distances
    assert distances[2] > distances[0], distances


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("level", [0, 50, 100])
def test_output_is_sample_aligned(name, level, speech_16k, sample_rate):
    out, params = get_family(name)(speech_16k, sample_rate, level, np.random.default_rng(1))
    assert out.shape == speech_16k.shape
    assert xcorr_lag(speech_16k, out) == 0, params


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_gives_byte_identical_audio(name, speech_16k, sample_rate):
    family = get_family(name)
    a, pa = family(speech_16k, sample_rate, 60, np.random.default_rng(7))
    b, pb = get_family(name)(speech_16k, sample_rate, 60, np.random.default_rng(7))
    assert a.tobytes() == b.tobytes() and pa == pb


@pytest.mark.parametrize("name", FAMILIES)
def test_apply_from_json_params_reproduces_the_call(name, speech_16k, sample_rate):
    family = get_family(name)
    out, params = family(speech_16k, sample_rate, 80, np.random.default_rng(11))
    again = family.apply(speech_16k, sample_rate, json.loads(json.dumps(params)))
    assert again.tobytes() == out.tobytes()


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("level", [-1, 100.5, float("nan"), float("inf")])
def test_bad_level_raises(name, level, speech_16k, sample_rate):
    with pytest.raises(ValueError, match="level must lie in"):
        get_family(name)(speech_16k, sample_rate, level, np.random.default_rng(0))


@pytest.mark.parametrize("name", FAMILIES)
def test_bad_audio_and_sample_rate_raise(name, speech_16k, sample_rate):
    family = get_family(name)
    params = family.sample_params(50, np.random.default_rng(0), sample_rate=sample_rate, num_samples=len(speech_16k))
    with pytest.raises(ValueError, match="sample_rate 8000 Hz is not supported"):
        family.apply(speech_16k, 8000, params)
    with pytest.raises(ValueError, match="mono audio"):
        family.apply(np.stack([speech_16k, speech_16k]), sample_rate, params)
    bad = speech_16k.copy()
    bad[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        family.apply(bad, sample_rate, params)
    with pytest.raises(ValueError, match="floating point"):
        family.apply((speech_16k * 1000).astype(np.int16), sample_rate, params)


BAD_PARAMS = {
    "noise": [
        ({"noise_type": "white", "noise_seed": 1}, "lack 'snr_db'"),
        ({"snr_db": 10, "noise_type": "purple", "noise_seed": 1}, "not a colour"),
        ({"snr_db": float("nan"), "noise_type": "white", "noise_seed": 1}, "finite number"),
    ],
    "reverb": [
        ({"rir": "cave", "drr_db": 0}, "'shoebox' or 'file'"),
        (
            {
                "rir": "shoebox",
                "drr_db": 0,
                "rt60_target_s": 0.5,
                "room_dims_m": [1, 2],
                "source_m": [1, 1, 1],
                "mic_m": [2, 2, 2],
                "rir_seed": 0,
            },
            "3 numbers",
        ),
        ({"rir": "file", "rir_file": "x.wav", "drr_db": 0}, "no rir_dir"),
    ],
    "mp3": [
        ({"bitrate_kbps": 100}, "not a legal MP3 bitrate at 16000 Hz"),
        ({"bitrate_kbps": 320}, "not a legal MP3 bitrate"),
        ({}, "lack 'bitrate_kbps'"),
    ],
    "eq": [
        ({"gain_low_db": 3, "gain_mid_db": -3}, "lack 'gain_high_db'"),
        ({"gain_low_db": 3, "gain_mid_db": -3, "gain_high_db": 99}, "outside"),
    ],
    "lowpass": [({"cutoff_hz": 9000}, "outside"), ({"cutoff_hz": "high"}, "finite number")],
    "clipping": [({"threshold_db": 3}, "outside")],
    "mulaw": [({"bits": 1}, "outside"), ({"bits": 7.5}, "integer")],
    "chain": [({"members": []}, "non-empty"), ({"members": [{"family": "flanger", "params": {}}]}, "unknown member")],
}


@pytest.mark.parametrize("name,params,message", [(n, p, m) for n, cases in BAD_PARAMS.items() for p, m in cases])
def test_bad_params_raise_clear_errors(name, params, message, speech_16k, sample_rate):
    with pytest.raises(ValueError, match=message):
        get_family(name).apply(speech_16k, sample_rate, params)


def _mulaw_formula(audio: np.ndarray, bits: int, mu: float = 255.0) -> np.ndarray:
    """The μ-law family written out as the formula, per sample in float64 (no table)."""
    x = audio.astype(np.float64)
    scale = max(1.0, float(np.max(np.abs(x))))
    x = x / scale
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    steps = 2.0 ** (bits - 1) - 1.0
    quantised = np.round(companded * steps) / steps
    expanded = np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu
    return (expanded * scale).astype(np.float32)


@pytest.mark.parametrize("hot", [False, True])
def test_mulaw_step_table_gives_the_formulas_bytes(hot, speech_16k, sample_rate):
    # the family looks expanded steps up in a cached table (bits <= 16) and puts the sign back
    # afterwards; both must give the formula's bytes, zeros (+0.0, also for negative inputs) included
    ramp = np.linspace(-1.0, 1.0, 40001)
    edge = np.concatenate([[0.0, -0.0, 1e-30, -1e-30], 1e-9 * np.arange(-50, 51), ramp, speech_16k])
    audio = (edge * (1.4 if hot else 1.0)).astype(np.float32)
    family = get_family("mulaw")
    for bits in (2, 3, 8, 16, 17, 24):
        expected = _mulaw_formula(audio, bits)
        assert family.apply(audio, sample_rate, {"bits": bits}).tobytes() == expected.tobytes(), bits
