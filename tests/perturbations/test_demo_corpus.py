"""The demo corpus: clip lengths, loudness, trimming, noise colours, determinism, failures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import welch

from perturbations import demo_corpus
from perturbations.noises import PSD_EXPONENT

NOISES = ("white", "pink", "brown", "blue", "violet", "babble")
NOISE_S = 6.0  # shorter than the default 25 s, enough for a spectral slope


def _build(out_dir: Path) -> Path:
    demo_corpus.build(out_dir, progress=False, noise_duration_s=NOISE_S)
    return out_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def rows(corpus) -> list[dict[str, str]]:
    with open(corpus / "corpus.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _speech(rows):
    return [row for row in rows if row["kind"] == "speech"]


def _frame_db(audio: np.ndarray, rate: int) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(audio, int(0.02 * rate))[:: int(0.01 * rate)]
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def test_layout_and_csv_match_the_files(corpus, rows):
    assert (corpus / demo_corpus.COMPLETE_MARKER).is_file()
    assert list(rows[0]) == list(demo_corpus.CSV_COLUMNS)
    on_disk = {p.relative_to(corpus).as_posix() for p in corpus.glob("*/*.wav")}
    assert on_disk == {row["path"] for row in rows}
    assert not list(corpus.rglob("*.part"))
    meter = pyloudnorm.Meter(16000)
    for row in rows:
        audio, rate = sf.read(corpus / row["path"], dtype="float64")
        assert audio.ndim == 1 and rate == int(row["sample_rate"]) == 16000, row["path"]
        assert float(row["duration_s"]) == pytest.approx(len(audio) / rate, abs=1e-4)
        assert float(row["loudness_lufs"]) == pytest.approx(meter.integrated_loudness(audio), abs=0.01)


def test_speech_has_both_sources_and_enough_clips(rows):
    speech = _speech(rows)
    recorded = [r for r in speech if r["source"].startswith("pocketsphinx:")]
    synthesised = [r for r in speech if r["source"].startswith("espeak-ng:")]
    assert len(recorded) >= 5 and len(synthesised) >= 8
    assert len(recorded) + len(synthesised) == len(speech)
    assert 20 <= len(speech) <= 40
    voices = {r["source"].split(":")[1] for r in synthesised}
    assert len(voices) >= 4


def test_speech_clips_are_2_to_4_s_normalised_and_unclipped(corpus, rows):
    meter = pyloudnorm.Meter(16000)
    peak_limit = 10 ** (demo_corpus.SPEECH_PEAK_MAX_DBFS / 20) + 1e-4  # headroom for the ladder
    for row in _speech(rows):
        audio, rate = sf.read(corpus / row["path"], dtype="float64")
        assert 2.0 <= len(audio) / rate <= 4.0, row["path"]
        assert meter.integrated_loudness(audio) == pytest.approx(demo_corpus.TARGET_LUFS, abs=0.5), row["path"]
        assert np.max(np.abs(audio)) <= peak_limit, row["path"]


def _source_floor_db(row: dict[str, str], clip: np.ndarray) -> float:
    """Background level of the clip's source recording, at the clip's gain."""
    if row["source"].startswith("espeak-ng:"):
        return -90.0  # espeak-ng pads its speech with digital silence
    rel, span = row["source"].removeprefix("pocketsphinx:").split("@")
    source = demo_corpus._read_recording(demo_corpus.POCKETSPHINX_DATA / rel).astype(np.float64)
    start, end = (round(float(t) * 16000) for t in span.removesuffix("s").split("-"))
    gain_db = 20 * np.log10(np.std(clip) / np.std(source[start:end]))
    return float(np.percentile(_frame_db(source, 16000), 10)) + gain_db


def test_speech_clips_start_and_end_on_speech(corpus, rows):
    for row in _speech(rows):
        audio, rate = sf.read(corpus / row["path"], dtype="float64")
        floor_db = _source_floor_db(row, audio)
        edge = int(0.05 * rate)  # speech within 50 ms of either end, not the background
        for part in (audio[:edge], audio[-edge:]):
            assert _frame_db(part, rate).max() > floor_db + 6, row["path"]


def test_trim_finds_a_burst_inside_noisy_silence():
    rng = np.random.default_rng(0)
    audio = 0.003 * rng.standard_normal(48000)  # -50 dBFS floor, like the recordings
    audio[12000:36000] += 0.3 * np.sin(2 * np.pi * 220 * np.arange(24000) / 16000)
    start, end = demo_corpus._trim(audio.astype(np.float32))
    assert abs(start - 12000) <= 0.03 * 16000 and abs(end - 36000) <= 0.03 * 16000


def test_cut_splits_long_recordings_at_pauses():
    rng = np.random.default_rng(1)
    audio = 0.001 * rng.standard_normal(16000 * 7)
    bursts = [(0.3, 2.9), (3.3, 6.5)]  # a 0.4 s pause at 2.9-3.3 s
    for a, b in bursts:
        n = int((b - a) * 16000)
        audio[int(a * 16000) : int(a * 16000) + n] += 0.2 * rng.standard_normal(n)
    segments = demo_corpus._cut(audio.astype(np.float32))
    assert len(segments) == 2
    for (start, end), (a, b) in zip(segments, bursts, strict=True):
        assert start / 16000 == pytest.approx(a, abs=0.03) and end / 16000 == pytest.approx(b, abs=0.03)


def test_all_noises_present_with_their_colour_slope(corpus, rows):
    noise_rows = {Path(r["path"]).stem: r for r in rows if r["kind"] == "noise"}
    assert set(noise_rows) == set(NOISES)
    for name in NOISES:
        audio, rate = sf.read(corpus / noise_rows[name]["path"], dtype="float64")
        assert len(audio) == int(NOISE_S * rate)
        assert np.max(np.abs(audio)) <= 10 ** (demo_corpus.PEAK_LIMIT_DBFS / 20) + 1e-4
        freqs, psd = welch(audio, rate, nperseg=4096)
        band = (freqs >= 100) & (freqs <= 4000)
        slope = np.polyfit(np.log10(freqs[band]), np.log10(psd[band]), 1)[0]
        if name in PSD_EXPONENT:
            assert slope == pytest.approx(PSD_EXPONENT[name], abs=0.15), name
        else:  # babble: speech-shaped, falling above its formants, never silent for long
            assert -3.0 < slope < -0.5
            windows = audio[: len(audio) // 8000 * 8000].reshape(-1, 8000)  # 0.5 s
            window_db = 10 * np.log10(np.mean(windows**2, axis=1))
            assert window_db.max() - window_db.min() < 10


def test_two_builds_are_byte_identical(corpus, tmp_path):
    again = _build(tmp_path / "again")
    files = sorted(p.relative_to(corpus) for p in corpus.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (corpus / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_max_clips_limits_each_speech_source_and_a_rebuild_removes_stale_files(tmp_path):
    stale = tmp_path / "speech" / "old_clip.wav"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an older build")
    leftover = tmp_path / "speech" / ".x.wav.abc.part"
    leftover.write_bytes(b"half written")
    leftover_csv = tmp_path / ".corpus.csv.k3j2.part"
    leftover_csv.write_bytes(b"path,kind")
    demo_corpus.build(tmp_path, progress=False, max_clips=2, noise_duration_s=1.0)
    speech = sorted(p.name for p in (tmp_path / "speech").iterdir())
    assert len(speech) == 4
    assert sum(name.startswith("ps_") for name in speech) == 2
    assert not stale.exists() and not leftover.exists() and not leftover_csv.exists()


@pytest.mark.parametrize("kwargs", [{"max_clips": 0}, {"noise_duration_s": 0.1}])
def test_bad_build_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        demo_corpus.build(tmp_path, progress=False, **kwargs)


def test_interrupted_build_leaves_no_marker_and_no_partial_files(tmp_path, monkeypatch):
    real_write = demo_corpus._write_clip
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(demo_corpus, "_write_clip", failing_write)
    with pytest.raises(KeyboardInterrupt):
        demo_corpus.build(tmp_path, progress=False, max_clips=2, noise_duration_s=1.0)
    assert not demo_corpus.is_complete(tmp_path)
    assert not (tmp_path / "corpus.csv").exists()
    assert not list(tmp_path.rglob("*.part"))


def test_missing_pocketsphinx_testdata_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_corpus, "POCKETSPHINX_DATA", tmp_path / "no-such-folder")
    with pytest.raises(demo_corpus.CorpusBuildError, match="pocketsphinx-testdata"):
        demo_corpus.build(tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_espeak_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_corpus, "ESPEAK", "espeak-ng-not-installed")
    with pytest.raises(demo_corpus.CorpusBuildError, match="install the Debian package espeak-ng"):
        demo_corpus.build(tmp_path / "out", progress=False)
