"""Corpus loaders on tiny fake trees of each layout (0.1 s files)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perturbations.audio import load_audio
from perturbations.corpora import CorpusError, CorpusItem, detect_layout, find_audio, safe_item_id

RATE = 16000


def _audio_file(path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tone = 0.1 * np.sin(2 * np.pi * 440 * np.arange(RATE // 10) / RATE).astype(np.float32)
    sf.write(str(path), tone, RATE, format=fmt or path.suffix.lstrip(".").upper())
    return path


def _text_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture()
def vctk092(tmp_path) -> Path:
    corpus = tmp_path / "VCTK-Corpus-0.92"
    for speaker in ("p225", "p226"):
        for utt in ("001", "002"):
            for mic in ("mic1", "mic2"):
                _audio_file(corpus / "wav48_silence_trimmed" / speaker / f"{speaker}_{utt}_{mic}.flac")
            _text_file(corpus / "txt" / speaker / f"{speaker}_{utt}.txt", f"Please call Stella {utt}.\n")
    _text_file(corpus / "wav48_silence_trimmed" / "log.txt", "not audio")
    _text_file(
        corpus / "speaker-info.txt",
        "ID  AGE  GENDER  ACCENTS  REGION COMMENTS\np225  23  F    English    Southern  England\n"
        "p226  22  M    English    Surrey\n",
    )
    return tmp_path


@pytest.fixture()
def daps(tmp_path) -> Path:
    for version in ("clean", "produced", "ipad_office1"):
        for speaker in ("f1", "m10"):
            for script in ("script1", "script2"):
                _audio_file(tmp_path / "daps" / version / f"{speaker}_{script}_{version}.wav")
    _audio_file(tmp_path / "daps" / "clean" / "._f1_script1_clean.wav")  # macOS resource fork
    return tmp_path


@pytest.fixture()
def librispeech(tmp_path) -> Path:
    for subset, speaker, chapter in (("dev-clean", "84", "121123"), ("test-clean", "1089", "134686")):
        chapter_dir = tmp_path / "LibriSpeech" / subset / speaker / chapter
        lines = []
        for utt in ("0000", "0001"):
            _audio_file(chapter_dir / f"{speaker}-{chapter}-{utt}.flac")
            lines.append(f"{speaker}-{chapter}-{utt} WORDS OF UTTERANCE {utt}")
        _text_file(chapter_dir / f"{speaker}-{chapter}.trans.txt", "\n".join(lines) + "\n")
    return tmp_path


def test_folder_is_recursive_sorted_and_ids_are_unique_and_safe(tmp_path):
    _audio_file(tmp_path / "b" / "clip one.wav")
    _audio_file(tmp_path / "a.flac")
    _audio_file(tmp_path / "a.wav")  # same stem as a.flac
    _audio_file(tmp_path / "c" / "d.ogg", fmt="OGG")
    _audio_file(tmp_path / "UPPER.WAV")
    _audio_file(tmp_path / ".hidden" / "x.wav")
    _audio_file(tmp_path / ".a.wav.123.part", fmt="WAV")
    _audio_file(tmp_path / "b" / "._clip one.wav")  # macOS resource fork
    _text_file(tmp_path / "notes.txt", "not audio")
    items = find_audio(tmp_path, layout="folder")
    assert [item.extra["relative_path"] for item in items] == [
        "UPPER.WAV",
        "a.flac",
        "a.wav",
        "b/clip one.wav",
        "c/d.ogg",
    ]
    assert [item.item_id for item in items] == ["UPPER", "a.flac", "a.wav", "b-clip_one", "c-d"]
    assert all(item.speaker is None for item in items)
    assert find_audio(tmp_path) == items  # auto falls back to folder
    for item in items:
        assert load_audio(item.path)[1] == RATE


def test_folder_includes_mp3(tmp_path):
    path = tmp_path / "x.mp3"
    _audio_file(path, fmt="MP3")
    assert [item.path for item in find_audio(tmp_path)] == [path]


def test_folder_ids_that_still_collide_are_numbered(tmp_path):
    _audio_file(tmp_path / "a b.wav")
    _audio_file(tmp_path / "a_b.wav")
    assert [item.item_id for item in find_audio(tmp_path)] == ["a_b.wav", "a_b.wav-2"]


def test_safe_item_id():
    assert safe_item_id("..weird/név__x y") == "weird_n_v_x_y"
    assert safe_item_id("p225_001") == "p225_001"


def test_vctk_092_picks_mic1_with_transcripts_and_speaker_info(vctk092):
    assert detect_layout(vctk092) == "vctk"
    items = find_audio(vctk092)
    assert [item.item_id for item in items] == ["p225_001", "p225_002", "p226_001", "p226_002"]
    assert all(item.path.name.endswith("_mic1.flac") for item in items)
    first = items[0]
    assert first.speaker == "p225"
    assert first.extra == {
        "age": "23",
        "gender": "F",
        "accent": "English",
        "region": "Southern England",
        "mic": "mic1",
        "text": "Please call Stella 001.",
    }
    assert find_audio(vctk092, "vctk", vctk_mic="mic2")[0].path.name == "p225_001_mic2.flac"
    # the audio folder itself works as a root too
    assert find_audio(vctk092 / "VCTK-Corpus-0.92" / "wav48_silence_trimmed", "vctk") == items


def test_vctk_unknown_mic_lists_the_mics_present(vctk092):
    with pytest.raises(CorpusError, match=r"no VCTK files for 'mic3'; found mic1, mic2"):
        find_audio(vctk092, "vctk", vctk_mic="mic3")


def test_old_vctk_layout(tmp_path):
    for utt in ("001", "003"):
        _audio_file(tmp_path / "VCTK-Corpus" / "wav48" / "p225" / f"p225_{utt}.wav")
    _text_file(
        tmp_path / "VCTK-Corpus" / "speaker-info.txt",
        "ID AGE GENDER ACCENTS REGION\n225 23 F English Southern England\n",
    )
    items = find_audio(tmp_path)
    assert [(i.item_id, i.speaker, i.extra["gender"]) for i in items] == [
        ("p225_001", "p225", "F"),
        ("p225_003", "p225", "F"),
    ]


def test_daps_picks_one_version_and_skips_resource_forks(daps):
    assert detect_layout(daps) == "daps"
    items = find_audio(daps)
    assert [item.item_id for item in items] == [
        "f1_script1_clean",
        "f1_script2_clean",
        "m10_script1_clean",
        "m10_script2_clean",
    ]
    assert items[0].speaker == "f1" and items[0].extra == {"script": "script1", "version": "clean"}
    produced = find_audio(daps / "daps", "daps", daps_version="ipad_office1")
    assert [item.item_id for item in produced][0] == "f1_script1_ipad_office1"


def test_daps_missing_version_lists_the_versions(daps):
    expected = "'iphone_balcony1' not found; versions present: clean, ipad_office1, produced"
    with pytest.raises(CorpusError, match=expected):
        find_audio(daps, "daps", daps_version="iphone_balcony1")


def test_librispeech_with_transcripts_and_subset_choice(librispeech):
    assert detect_layout(librispeech) == "librispeech"
    items = find_audio(librispeech)
    assert [item.item_id for item in items] == [
        "1089-134686-0000",
        "1089-134686-0001",
        "84-121123-0000",
        "84-121123-0001",
    ]
    item = items[2]
    assert item.speaker == "84"
    assert item.extra == {"subset": "dev-clean", "chapter": "121123", "text": "WORDS OF UTTERANCE 0000"}
    dev = find_audio(librispeech, "librispeech", librispeech_subsets=["dev-clean"])
    assert {i.extra["subset"] for i in dev} == {"dev-clean"}
    # a subset folder on its own is recognised too
    assert find_audio(librispeech / "LibriSpeech" / "dev-clean") == dev


def test_librispeech_missing_subset_is_named(librispeech):
    with pytest.raises(CorpusError, match="train-other-500 not found; present: dev-clean, test-clean"):
        find_audio(librispeech, "librispeech", librispeech_subsets=["train-other-500"])


def test_missing_empty_and_mismatched_roots_name_the_folder(tmp_path):
    with pytest.raises(CorpusError, match=re.escape(f"{tmp_path / 'nope'}") + ": corpus folder does not exist"):
        find_audio(tmp_path / "nope")
    _text_file(tmp_path / "empty" / "readme.txt", "no audio here")
    with pytest.raises(CorpusError, match=re.escape(f"{tmp_path / 'empty'}") + ": holds no audio files"):
        find_audio(tmp_path / "empty")
    _audio_file(tmp_path / "plain" / "x.wav")
    for layout, what in (("vctk", "VCTK"), ("daps", "DAPS"), ("librispeech", "LibriSpeech")):
        with pytest.raises(CorpusError, match=re.escape(f"{tmp_path / 'plain'}: not a {what} corpus")):
            find_audio(tmp_path / "plain", layout)
    with pytest.raises(CorpusError, match="is not a folder"):
        find_audio(tmp_path / "plain" / "x.wav")
    with pytest.raises(ValueError, match="unknown corpus layout 'timit'"):
        find_audio(tmp_path, "timit")


def test_items_are_plain_records():
    item = CorpusItem(Path("a.wav"), "a")
    assert item.speaker is None and item.extra == {}
