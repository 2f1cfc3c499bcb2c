"""MP3 (MPEG-1/2 Layer III, LAME) encode and decode, in process, delay-compensated.

Backends
  ``lameenc`` (default): LAME 3.100 through the lameenc binding at quality
      ``LAME_QUALITY`` = 7 (LAME's "-q 7", also audiomentations' default), decoded
      in memory by mpg123 through soundfile/libsndfile. About 4 ms per 3 s clip at 16 kHz.
  ``libsndfile``: soundfile 0.14 encodes through libsndfile+LAME at LAME's default
      quality (-q 3; libsndfile exposes no quality setting) and decodes through mpg123.
      About 2.5x slower to encode.
  ``ffmpeg``: pydub round trip through two ffmpeg subprocesses, ~15x slower;
      kept for codecs libsndfile lacks (AAC, Opus would be next).

Encoder quality. LAME's -q trades noise-shaping search for speed; -q 7 keeps the
psychoacoustic model and CBR bit allocation but skips the noise-shaping loops.
Measured on six 3 s speech clips at 16 kHz, 8-96 kbps (PESQ WB and DPAM distance;
``benchmarks/perturbations_throughput.py --lame-qualities`` repeats the PESQ part): -q 7
scores within 0.1 PESQ of LAME's default -q 3 at every bitrate (on two clip sets; higher
at 8-16 kbps), its DPAM distances are lower at 8-48 kbps and within 0.05 above at 64-96
kbps, and it encodes 2-2.5x faster; -q 8/9 produce the same stream as -q 7.

Bitrate: libsndfile takes a ``compression_level`` c in [0, 1] and, in CBR mode, asks
LAME for ``int(max - c * (max - min))`` kbps (MPEG-1 at 32-48 kHz: 32..320;
MPEG-2 at 16-24 kHz: 8..160), which LAME snaps to the nearest legal bitrate. We
invert that map so every legal bitrate is hit exactly.

Ladder (level -> bitrate): the ladder spans the legal bitrates of the sample rate
(MPEG-2 at 16-24 kHz: 160 down to 8 kbps; MPEG-1 at 32-48 kHz: 320 down to 32),
and level L picks rung ``floor((L / 100) * (n - 1) + 0.5)`` of the n = 14 legal
rates, highest first (``ladder_bitrate``). Any ladder of up to 14 evenly spaced
levels therefore gets distinct rungs (a fixed 320..8 kbps geometric target
snapped to 16 kHz's legal set put every level below ~23 on the 160 kbps ceiling,
and log-snapping collides at the sparse low end: 8, 16, 24 kbps). The recorded
``bitrate_target_kbps`` interpolates log-bitrate between the two neighbouring
rungs at the fractional position, so it is strictly decreasing in level (a smooth
physical axis for the analysis). lameenc takes the bitrate in kbps directly
and the output rate is pinned to the input rate (else LAME resamples low bitrates
down). ``bitrate_kbps`` records the rate used; every frame header carries it
(tests/perturbations/test_family_mp3.py reads them).

Delay: LAME delays its output by 576 samples and the decoder by 529, 1105 in all
(``CODEC_DELAY_SAMPLES``, the same at every supported rate; measured in
tests/perturbations/test_family_mp3.py). When LAME can fit its Info/LAME tag in
the first frame (libsndfile, higher bitrates) mpg123 trims delay and padding and
returns exactly the input length; at low bitrates, and always with lameenc (which
writes no Info tag), the decoded stream is longer and delayed by the constant. We
tell the two cases apart by the decoded length (an untrimmed stream is always
longer than the input) and remove the constant: no per-clip cross-correlation.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
import soundfile as sf

from perturbations.base import LEVEL_MAX, Family, Parameter, check_level
from perturbations.families import check_audio, param

BITRATE_AT_0_KBPS = 320.0
BITRATE_AT_100_KBPS = 8.0
CODEC_DELAY_SAMPLES = 1105  # LAME encoder delay (576) + mpg123 decoder delay (529)
MPEG1_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MPEG2_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
BACKENDS = ("lameenc", "libsndfile", "ffmpeg")
LAME_QUALITY = 7  # LAME -q: 0 best/slowest .. 9 fastest; see the module docstring
HEADROOM_PEAK = 0.5  # hotter input is scaled down before encoding and back after (no clipping)


def valid_bitrates(sample_rate: int) -> tuple[int, ...]:
    """Legal Layer III bitrates at ``sample_rate`` (MPEG-1 from 32 kHz, MPEG-2 below)."""
    return MPEG1_KBPS if sample_rate >= 32000 else MPEG2_KBPS


def snap_bitrate(target_kbps: float, sample_rate: int) -> int:
    """The legal bitrate nearest ``target_kbps`` on a log scale, clamped to the rate's range."""
    legal = valid_bitrates(sample_rate)
    return min(legal, key=lambda b: (abs(math.log(b / target_kbps)), b))


def ladder_position(level: float, sample_rate: int) -> float:
    """Fractional index into the legal bitrates, highest first, for a 0..100 level."""
    check_level(level)
    return level / LEVEL_MAX * (len(valid_bitrates(sample_rate)) - 1)


def ladder_bitrate(level: float, sample_rate: int) -> int:
    """The ladder's legal CBR bitrate (kbps) at ``level`` (see the module docstring)."""
    legal = valid_bitrates(sample_rate)[::-1]
    return int(legal[math.floor(ladder_position(level, sample_rate) + 0.5)])


def ladder_target_kbps(level: float, sample_rate: int) -> float:
    """Log-bitrate interpolated between the neighbouring rungs at ``level``: strictly
    decreasing in level, equal to ``ladder_bitrate`` at the rungs' own levels."""
    legal = np.log(np.asarray(valid_bitrates(sample_rate)[::-1], float))
    return float(np.exp(np.interp(ladder_position(level, sample_rate), np.arange(legal.size), legal)))


def compression_level_for(bitrate_kbps: int, sample_rate: int) -> float:
    """libsndfile compression_level that makes LAME use exactly ``bitrate_kbps`` (CBR)."""
    legal = valid_bitrates(sample_rate)
    top, bottom = legal[-1], legal[0]
    # +0.5 kbps keeps libsndfile's int() truncation on the right side of the integer
    return min(1.0, max(0.0, (top - (bitrate_kbps + 0.5)) / (top - bottom)))


def encode_lame(x: np.ndarray, sample_rate: int, bitrate_kbps: int, quality: int = LAME_QUALITY) -> bytes:
    """CBR MP3 bytes of mono float ``x`` (shape (samples,), within [-1, 1]) through lameenc's LAME.

    The input is rounded to 16-bit PCM (lameenc's input format); the output sample rate
    is the input's. Raises ImportError naming the package when lameenc is missing.
    """
    try:
        import lameenc
    except ImportError:  # pragma: no cover - lameenc is in requirements.lock
        raise ImportError(
            "the mp3 family's lameenc backend needs the lameenc package (pip install lameenc), "
            "or use backend='libsndfile'"
        ) from None
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(int(bitrate_kbps))
    encoder.set_in_sample_rate(int(sample_rate))
    encoder.set_out_sample_rate(int(sample_rate))  # else LAME picks a lower rate for low bitrates
    encoder.set_channels(1)
    encoder.set_quality(int(quality))
    pcm = np.rint(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


def encode_libsndfile(x: np.ndarray, sample_rate: int, bitrate_kbps: int) -> bytes:
    """CBR MP3 bytes of mono float ``x`` (shape (samples,)) through libsndfile's LAME at LAME's
    default quality (-q 3); ``bitrate_kbps`` must be legal at ``sample_rate`` (``valid_bitrates``).

    Raises ``soundfile.LibsndfileError`` when libsndfile was built without MP3 support.
    """
    buf = io.BytesIO()
    sf.write(
        buf,
        x,
        sample_rate,
        format="MP3",
        bitrate_mode="CONSTANT",
        compression_level=compression_level_for(bitrate_kbps, sample_rate),
    )
    return buf.getvalue()


def decode_mp3(data: bytes, sample_rate: int) -> np.ndarray:
    """MP3 ``data`` decoded by mpg123 (through libsndfile): float32, shape (samples,), delay not removed.

    Raises ``RuntimeError`` when the stream's rate is not ``sample_rate``.
    """
    decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
    if rate != sample_rate:
        raise RuntimeError(f"libsndfile decoded MP3 at {rate} Hz, expected {sample_rate} Hz")
    return decoded


def _encode_decode_ffmpeg(x: np.ndarray, sample_rate: int, bitrate_kbps: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pydub imports audioop
        import pydub
    pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    segment = pydub.AudioSegment(pcm.tobytes(), frame_rate=sample_rate, sample_width=2, channels=1)
    buf = io.BytesIO()
    segment.export(buf, format="mp3", bitrate=f"{bitrate_kbps}k", parameters=["-ar", str(sample_rate)])
    buf.seek(0)
    decoded = pydub.AudioSegment.from_file(buf, format="mp3")
    if decoded.frame_rate != sample_rate or decoded.channels != 1:
        raise RuntimeError(f"ffmpeg decoded MP3 at {decoded.frame_rate} Hz x {decoded.channels} ch")
    return np.frombuffer(decoded.raw_data, dtype="<i2").astype(np.float32) / 32768.0


def remove_codec_delay(decoded: np.ndarray, num_samples: int) -> np.ndarray:
    """Align a decoded stream with its input and crop/pad it to ``num_samples``."""
    delay = 0 if decoded.shape[0] == num_samples else CODEC_DELAY_SAMPLES
    out = decoded[delay : delay + num_samples]
    if out.shape[0] < num_samples:
        out = np.pad(out, (0, num_samples - out.shape[0]))
    return out


def mp3_roundtrip(
    x: np.ndarray, sample_rate: int, bitrate_kbps: int, *, backend: str = "lameenc", quality: int = LAME_QUALITY
) -> np.ndarray:
    """Mono float ``x`` (shape (samples,), within [-1, 1]) encoded as CBR MP3 at ``bitrate_kbps``
    by ``backend`` (see the module docstring), decoded, and aligned with ``x``: float32, same shape.

    ``quality``: LAME's -q, used by the ``lameenc`` backend only.
    Raises ``ValueError`` for an unknown backend, ``ImportError`` when its package is missing,
    ``RuntimeError`` when the decoded stream is not at ``sample_rate``.
    """
    if backend == "lameenc":
        decoded = decode_mp3(encode_lame(x, sample_rate, bitrate_kbps, quality), sample_rate)
    elif backend == "libsndfile":
        decoded = decode_mp3(encode_libsndfile(x, sample_rate, bitrate_kbps), sample_rate)
    elif backend == "ffmpeg":
        decoded = _encode_decode_ffmpeg(x, sample_rate, bitrate_kbps)
    else:
        raise ValueError(f"unknown mp3 backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return remove_codec_delay(decoded, x.shape[0])


class Mp3Family(Family):
    name = "mp3"
    category = "codec"
    description = "MP3 CBR round trip (LAME), encoder/decoder delay removed."
    parameters = (
        Parameter(
            "bitrate_kbps",
            BITRATE_AT_0_KBPS,
            BITRATE_AT_100_KBPS,
            "CBR bitrate used: rung round(L/100 * 13) of the sample rate's 14 legal rates, highest "
            "first (160..8 kbps at 16-24 kHz, 320..32 at 32-48 kHz)",
        ),
        Parameter(
            "bitrate_target_kbps",
            BITRATE_AT_0_KBPS,
            BITRATE_AT_100_KBPS,
            "log-bitrate interpolated between neighbouring rungs (strictly decreasing in level)",
        ),
    )

    def __init__(self, backend: str = "lameenc"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown mp3 backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend = backend

    def sample_params(
        self, level: float, rng: np.random.Generator, *, sample_rate: int, num_samples: int
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "bitrate_kbps": ladder_bitrate(level, sample_rate),
            "bitrate_target_kbps": ladder_target_kbps(level, sample_rate),
            "encoder": self.backend,
        }
        if self.backend == "lameenc":
            params["lame_quality"] = LAME_QUALITY  # the only backend whose -q is ours to set
        return params

    def apply(self, audio: np.ndarray, sample_rate: int, params: dict[str, Any]) -> np.ndarray:
        audio = check_audio(audio, sample_rate)
        bitrate = param(params, "bitrate_kbps", self.name)
        legal = valid_bitrates(sample_rate)
        if bitrate not in legal:
            raise ValueError(
                f"{self.name}: bitrate_kbps={bitrate:g} is not a legal MP3 bitrate at {sample_rate} Hz; use one of {legal}"
            )
        peak = float(np.max(np.abs(audio)))
        scale = HEADROOM_PEAK / peak if peak > HEADROOM_PEAK else 1.0
        # A row records its encoder (and LAME quality), so regenerating it uses the same codec
        # whatever this instance's default; rows written before they were recorded used lameenc -q 7.
        backend = params.get("encoder", self.backend)
        if backend not in BACKENDS:
            raise ValueError(f"{self.name}: unknown encoder {backend!r}; choose one of {', '.join(BACKENDS)}")
        quality = int(params.get("lame_quality", LAME_QUALITY)) if backend == "lameenc" else LAME_QUALITY
        if not 0 <= quality <= 9:
            raise ValueError(f"{self.name}: lame_quality={quality} is outside LAME's -q range 0..9")
        decoded = mp3_roundtrip(
            (audio * scale).astype(np.float32), sample_rate, int(bitrate), backend=backend, quality=quality
        )
        return (decoded / scale).astype(np.float32)
