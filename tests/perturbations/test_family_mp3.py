"""MP3: exact CBR bitrates, the codec delay per sample rate, alignment at 8 and 128 kbps."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from perturbations.audio import resample
from perturbations.families.mp3 import (
    BACKENDS,
    CODEC_DELAY_SAMPLES,
    LAME_QUALITY,
    Mp3Family,
    compression_level_for,
    encode_lame,
    remove_codec_delay,
    snap_bitrate,
    valid_bitrates,
)
from perturbations.registry import get_family

RATES = (16000, 22050, 44100, 48000)
_MPEG1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


def frame_bitrates(data: bytes) -> set[int]:
    """Bitrates (kbps) in the Layer III frame headers of an MP3 byte string."""
    pos = 0
    if data[:3] == b"ID3":  # skip an ID3v2 tag
        pos = 10 + ((data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9])
    found = set()
    while pos + 4 <= len(data) and data[pos] == 0xFF and (data[pos + 1] & 0xE0) == 0xE0:
        mpeg1 = bool(data[pos + 1] & 0x08)
        kbps = (_MPEG1 if mpeg1 else _MPEG2)[data[pos + 2] >> 4]
        rate = ({0: 44100, 1: 48000, 2: 32000} if mpeg1 else {0: 22050, 1: 24000, 2: 16000})[(data[pos + 2] >> 2) & 3]
        padding = (data[pos + 2] >> 1) & 1
        found.add(kbps)
        pos += (144 if mpeg1 else 72) * kbps * 1000 // rate + padding
    assert found, "no MPEG frame found"
    return found


def xcorr_lag(reference, test):
    n = len(reference) + len(test)
    cc = np.fft.irfft(np.fft.rfft(test, n) * np.conj(np.fft.rfft(reference, n)), n)
    lag = int(np.argmax(cc))
    return lag if lag < n // 2 else lag - n


@pytest.fixture(scope="module")
def speech_at():
    def make(speech_16k, rate):
        return resample(speech_16k, 16000, rate)

    return make


@pytest.mark.parametrize("rate", RATES)
def test_compression_level_hits_every_legal_bitrate_exactly(rate):
    x = (np.random.default_rng(0).standard_normal(rate // 2) * 0.1).astype(np.float32)
    for kbps in valid_bitrates(rate):
        buf = io.BytesIO()
        sf.write(
            buf, x, rate, format="MP3", bitrate_mode="CONSTANT", compression_level=compression_level_for(kbps, rate)
        )
        assert frame_bitrates(buf.getvalue()) == {kbps}, (rate, kbps)


@pytest.mark.parametrize("rate", RATES)
def test_codec_delay_is_the_constant_when_the_decoder_cannot_trim(rate, speech_16k, speech_at):
    x = speech_at(speech_16k, rate)
    low = valid_bitrates(rate)[0]  # no room for the LAME Info tag: the decoder cannot trim
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="MP3", bitrate_mode="CONSTANT", compression_level=compression_level_for(low, rate))
    buf.seek(0)
    decoded, _ = sf.read(buf, dtype="float32")
    assert len(decoded) > len(x) + CODEC_DELAY_SAMPLES
    assert xcorr_lag(x, decoded) == CODEC_DELAY_SAMPLES
    # at a high bitrate the Info tag lets mpg123 trim delay and padding itself
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="MP3", bitrate_mode="CONSTANT", compression_level=compression_level_for(128, rate))
    buf.seek(0)
    decoded, _ = sf.read(buf, dtype="float32")
    assert len(decoded) == len(x) and xcorr_lag(x, decoded) == 0


@pytest.mark.parametrize("rate", RATES)
def test_lameenc_hits_every_legal_bitrate_exactly_at_the_input_rate(rate):
    x = (np.random.default_rng(0).standard_normal(rate // 2) * 0.1).astype(np.float32)
    for kbps in valid_bitrates(rate):
        data = encode_lame(x, rate, kbps)
        assert frame_bitrates(data) == {kbps}, (rate, kbps)
        assert sf.info(io.BytesIO(data)).samplerate == rate, (rate, kbps)  # LAME did not resample


@pytest.mark.parametrize("rate", RATES)
def test_lameenc_stream_is_untrimmed_and_delayed_by_the_constant(rate, speech_16k, speech_at):
    x = speech_at(speech_16k, rate)
    for kbps in (valid_bitrates(rate)[0], 128):
        decoded, _ = sf.read(io.BytesIO(encode_lame(x, rate, kbps)), dtype="float32")
        assert len(decoded) > len(x) + CODEC_DELAY_SAMPLES  # no Info tag: mpg123 cannot trim
        assert xcorr_lag(x, decoded) == CODEC_DELAY_SAMPLES, (rate, kbps)


def test_lameenc_reruns_are_byte_identical_and_the_quality_is_the_documented_one(speech_16k, sample_rate):
    assert encode_lame(speech_16k, sample_rate, 32) == encode_lame(speech_16k, sample_rate, 32)
    assert encode_lame(speech_16k, sample_rate, 32) == encode_lame(speech_16k, sample_rate, 32, quality=LAME_QUALITY)
    assert encode_lame(speech_16k, sample_rate, 32, quality=2) != encode_lame(speech_16k, sample_rate, 32)
    assert Mp3Family().backend == "lameenc"


@pytest.mark.parametrize("backend", ["lameenc", "libsndfile"])
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kbps", [8, 128])
def test_aligned_at_8_and_128_kbps(backend, rate, kbps, speech_16k, speech_at):
    x = speech_at(speech_16k, rate)
    used = snap_bitrate(kbps, rate)
    out = Mp3Family(backend=backend).apply(x, rate, {"bitrate_kbps": used})
    assert out.shape == x.shape and out.dtype == np.float32
    assert xcorr_lag(x, out) == 0


def test_bitrate_is_clamped_to_the_rate_and_recorded():
    family = get_family("mp3")
    rng = np.random.default_rng(0)
    at = {
        rate: [family.sample_params(lv, rng, sample_rate=rate, num_samples=1000) for lv in (0, 100)] for rate in RATES
    }
    assert [p["bitrate_kbps"] for p in at[16000]] == [160, 8]  # MPEG-2 caps at 160
    assert [p["bitrate_kbps"] for p in at[48000]] == [320, 32]  # MPEG-1 floor is 32
    assert at[16000][1]["bitrate_target_kbps"] == pytest.approx(8.0)


def test_ffmpeg_backend_is_aligned_and_close_to_libsndfile(speech_16k, sample_rate):
    params = {"bitrate_kbps": 32}
    ours = Mp3Family().apply(speech_16k, sample_rate, params)
    theirs = Mp3Family(backend="ffmpeg").apply(speech_16k, sample_rate, params)
    assert theirs.shape == speech_16k.shape and xcorr_lag(speech_16k, theirs) == 0
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9


def test_remove_codec_delay_crops_and_pads():
    decoded = np.arange(2000, dtype=np.float32)
    assert remove_codec_delay(decoded, 2000).tobytes() == decoded.tobytes()
    out = remove_codec_delay(decoded, 1000)
    assert out[0] == CODEC_DELAY_SAMPLES and len(out) == 1000 and out[-1] == 0.0  # padded past the end


@pytest.mark.parametrize("backend", BACKENDS[:2])
def test_hot_input_is_not_clipped(backend, speech_16k, sample_rate):
    hot = speech_16k / np.max(np.abs(speech_16k)) * 1.5  # above full scale
    out = Mp3Family(backend=backend).apply(hot.astype(np.float32), sample_rate, {"bitrate_kbps": 128})
    assert np.max(np.abs(out)) > 1.2


def test_lameenc_and_libsndfile_make_the_same_kind_of_artefact(speech_16k, sample_rate):
    # -q 7 vs LAME's default -q 3: the same bitrate, alignment and a similar error level
    for kbps in (16, 64):
        ours = Mp3Family().apply(speech_16k, sample_rate, {"bitrate_kbps": kbps})
        theirs = Mp3Family(backend="libsndfile").apply(speech_16k, sample_rate, {"bitrate_kbps": kbps})
        snr = [10 * np.log10(np.sum(speech_16k**2) / np.sum((y - speech_16k) ** 2)) for y in (ours, theirs)]
        assert abs(snr[0] - snr[1]) < 6.0, (kbps, snr)
        assert np.corrcoef(ours, theirs)[0, 1] > 0.9


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("n_levels", [2, 5, 8, 11, 14])
def test_ladder_spans_the_legal_bitrates_with_distinct_rungs(rate, n_levels):
    # issue 15: at 16 kHz a 320..8 kbps target snapped every low level to the 160 kbps
    # ceiling, so the pooled fit saw identical stimuli at different levels
    family = get_family("mp3")
    rng = np.random.default_rng(0)
    levels = np.linspace(0, 100, n_levels)
    params = [family.sample_params(float(lv), rng, sample_rate=rate, num_samples=1000) for lv in levels]
    used = [p["bitrate_kbps"] for p in params]
    legal = valid_bitrates(rate)
    assert used[0] == max(legal) and used[-1] == min(legal)
    assert len(set(used)) == n_levels and used == sorted(used, reverse=True)
    targets = [p["bitrate_target_kbps"] for p in params]
    assert all(a > b for a, b in zip(targets, targets[1:]))


@pytest.mark.parametrize("rate", RATES)
def test_every_legal_bitrate_is_a_rung_and_the_target_matches_at_rungs(rate):
    family = get_family("mp3")
    rng = np.random.default_rng(0)
    legal = valid_bitrates(rate)
    levels = np.linspace(0, 100, len(legal))
    for lv, kbps in zip(levels, legal[::-1]):
        p = family.sample_params(float(lv), rng, sample_rate=rate, num_samples=1000)
        assert p["bitrate_kbps"] == kbps
        assert p["bitrate_target_kbps"] == pytest.approx(kbps)
