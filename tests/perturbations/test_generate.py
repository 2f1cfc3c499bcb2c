"""The engine: planning, seeds, determinism across runs and worker counts, resume rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from perturbations.generate import GenerateConfig, GenerateError, generate
from perturbations.generate.journal import JOURNAL_NAME
from perturbations.generate.plan import derive_seed, level_tag, parse_levels
from perturbations.loudness import loudness_lufs
from perturbations.manifest import read_manifest

FAMILIES = ("clipping", "mulaw", "noise")  # fast ones: the engine, not the families, is under test
LEVELS = (0.0, 50.0, 100.0)


def write_clip(path: Path, sample_rate: int = 16000, seconds: float = 1.0, seed: int = 0, gain: float = 0.3) -> Path:
    """A speech-like test signal: harmonics under a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0 = 110.0 + 40.0 * seed
    voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    envelope = 0.5 * (1.0 - np.cos(2 * np.pi * 4.0 * t))
    audio = gain * voiced * envelope / 2.0 + 0.003 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "input"
    for i in range(2):
        write_clip(root / f"clip{i}.wav", seed=i)
    return root


def config(corpus: Path, out: Path, **changes) -> GenerateConfig:
    values = dict(input_dir=corpus, output_dir=out, families=FAMILIES, levels=LEVELS, seed=7, code_version="test")
    values.update(changes)
    return GenerateConfig(**values)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


# ------------------------------------------------------------------ planning


def test_levels_count_and_list():
    assert parse_levels(11) == tuple(float(v) for v in range(0, 101, 10))
    assert parse_levels("5") == (0.0, 25.0, 50.0, 75.0, 100.0)
    assert parse_levels("100,0,50,50") == (0.0, 50.0, 100.0)
    assert parse_levels("30,") == (30.0,)
    assert parse_levels(7)[1] == 16.67
    for bad, message in [
        ("1", "at least 2"),
        ("0,150", r"\[0, 100\]"),
        ("x", "expected a count"),
        ("a,b", "comma-separated"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_levels(bad)


def test_level_tags_are_sortable_and_safe():
    assert level_tag(0) == "L000" and level_tag(10.0) == "L010" and level_tag(100) == "L100"
    assert level_tag(16.67) == "L016.67"


def test_seed_depends_on_every_field_and_not_on_the_process():
    base = derive_seed(7, "clip0", "noise")
    assert 0 <= base < 2**63
    variants = {derive_seed(8, "clip0", "noise"), derive_seed(7, "clip1", "noise"), derive_seed(7, "clip0", "mp3")}
    assert base not in variants and len(variants) == 3
    # a fresh interpreter with another hash salt gives the same seed (no use of hash())
    code = "from perturbations.generate.plan import derive_seed; print(derive_seed(7, 'clip0', 'noise'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout.strip()) == base


def test_a_ladder_keeps_its_random_choices_and_only_grows_in_strength(corpus, tmp_path):
    """Every rung of a (reference, family) ladder draws the same noise type and excerpt."""
    out = tmp_path / "out"
    generate(config(corpus, out), progress=False)
    rows = [r for r in read_manifest(out / "manifest.csv") if r.family == "noise"]
    for reference in {r.reference for r in rows}:
        ladder = sorted((r for r in rows if r.reference == reference), key=lambda r: r.level)
        assert len({r.seed for r in ladder}) == 1
        assert len({(r.params["noise_type"], r.params["noise_seed"]) for r in ladder}) == 1
        snrs = [r.params["snr_db"] for r in ladder]
        assert snrs == sorted(snrs, reverse=True) and len(set(snrs)) == len(snrs)


# ------------------------------------------------------------------ one run


def test_run_writes_every_stimulus_with_a_valid_manifest(corpus, tmp_path):
    out = tmp_path / "out"
    summary = generate(config(corpus, out), progress=False)
    rows = read_manifest(out / "manifest.csv", check_files=True)
    assert len(rows) == 2 * (1 + len(FAMILIES) * len(LEVELS)) == summary.num_rows
    assert summary.num_stimuli == 2 * len(FAMILIES) * len(LEVELS)
    assert not summary.skipped and not summary.failed
    references = {row.stimulus_id: row for row in rows if row.is_reference}
    assert set(references) == {"clip0__reference", "clip1__reference"}
    for row in rows:
        assert not Path(row.path).is_absolute()
        audio, rate = sf.read(str(row.resolve(out)), dtype="float32")
        assert rate == row.sample_rate == 16000 and len(audio) == row.num_samples
        assert np.max(np.abs(audio)) <= 1.0
        assert abs(loudness_lufs(audio, rate) - row.loudness_lufs) < 0.01
        assert row.num_samples == references[row.reference].num_samples
        assert row.jndlab_version == "test"
    for ref in references.values():
        assert abs(ref.loudness_lufs - (-23.0)) < 0.05
        assert ref.source in {"clip0.wav", "clip1.wav"}
        assert ref.params["target_loudness_lufs"] == -23.0
    noise = [row for row in rows if row.family == "noise"]
    assert all("snr_db" in row.params for row in noise)
    assert {row.seed for row in noise} == {derive_seed(7, r.reference.split("__")[0], "noise") for r in noise}
    assert not list(out.rglob("*.part"))


def test_same_command_twice_gives_identical_bytes(corpus, tmp_path):
    generate(config(corpus, tmp_path / "a"), progress=False)
    generate(config(corpus, tmp_path / "b"), progress=False)
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert a == b and len(a) == 2 * (1 + len(FAMILIES) * len(LEVELS))


def test_another_seed_changes_random_families_only(corpus, tmp_path):
    generate(config(corpus, tmp_path / "a"), progress=False)
    generate(config(corpus, tmp_path / "b", seed=8), progress=False)
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert a["noise/clip0__noise__L050.wav"] != b["noise/clip0__noise__L050.wav"]
    assert a["clipping/clip0__clipping__L050.wav"] == b["clipping/clip0__clipping__L050.wav"]


def test_worker_processes_give_the_same_manifest_and_audio(corpus, tmp_path):
    generate(config(corpus, tmp_path / "serial"), progress=False)
    generate(config(corpus, tmp_path / "pool"), workers=2, progress=False)
    assert (tmp_path / "serial" / "manifest.csv").read_bytes() == (tmp_path / "pool" / "manifest.csv").read_bytes()
    assert tree_bytes(tmp_path / "serial") == tree_bytes(tmp_path / "pool")


def test_rows_regenerate_their_audio(corpus, tmp_path):
    """Every clip is a function of its manifest row and its reference."""
    from perturbations.registry import get_family
    from perturbations.stimulus import regenerate

    out = tmp_path / "out"
    generate(config(corpus, out), progress=False)
    rows = read_manifest(out / "manifest.csv")
    by_id = {row.stimulus_id: row for row in rows}
    for row in rows:
        if row.is_reference:
            continue
        reference, rate = sf.read(str(by_id[row.reference].resolve(out)), dtype="float32")
        audio = regenerate(get_family(row.family), reference, rate, row.params)
        expected, _ = sf.read(str(row.resolve(out)), dtype="float32")
        np.testing.assert_array_equal(np.asarray(audio, dtype=np.float32), expected)


# ------------------------------------------------------------------ sample-rate policy


def test_other_rates_are_skipped_unless_resample(tmp_path):
    root = tmp_path / "input"
    write_clip(root / "ok.wav")
    write_clip(root / "cd.wav", sample_rate=44100, seed=1)
    summary = generate(config(root, tmp_path / "a", families=("clipping",)), progress=False)
    assert [(Path(s).name, r) for s, r in summary.skipped] == [
        ("cd.wav", "sample rate is 44100 Hz, expected 16000 Hz (pass --resample to convert)")
    ]
    summary = generate(config(root, tmp_path / "b", families=("clipping",), resample=True), progress=False)
    assert not summary.skipped
    rows = {row.stimulus_id: row for row in read_manifest(tmp_path / "b" / "manifest.csv")}
    assert rows["cd__reference"].params["resampled_from_hz"] == 44100
    assert rows["cd__reference"].num_samples == 16000
    assert "resampled_from_hz" not in rows["ok__reference"].params


def test_output_rate_follows_sample_rate_option(tmp_path):
    root = tmp_path / "input"
    write_clip(root / "a.wav", sample_rate=48000)
    generate(config(root, tmp_path / "out", families=("mulaw",), sample_rate=48000), progress=False)
    rows = read_manifest(tmp_path / "out" / "manifest.csv", check_files=True)
    assert {row.sample_rate for row in rows} == {48000}
    with pytest.raises(GenerateError, match="--sample-rate must be one of"):
        generate(config(root, tmp_path / "bad", sample_rate=12345), progress=False)


# ------------------------------------------------------------------ resume rules


def test_rerun_reuses_finished_clips_and_redoes_damaged_ones(corpus, tmp_path):
    out = tmp_path / "out"
    first = generate(config(corpus, out), progress=False)
    manifest = (out / "manifest.csv").read_bytes()
    damaged = out / "noise" / "clip1__noise__L100.wav"
    damaged.write_bytes(damaged.read_bytes()[:-10])  # truncated: sha256 no longer matches
    (out / "mulaw" / "clip0__mulaw__L050.wav").unlink()
    (out / "clipping" / ".clip0__clipping__L000.wav.abc.part").write_bytes(b"half")
    with open(out / JOURNAL_NAME, "a") as journal:
        journal.write('{"key": "torn')  # a kill in the middle of an append
    second = generate(config(corpus, out), progress=False)
    assert second.num_computed == 2 and second.num_reused == first.num_computed - 2
    assert second.new == {"noise": 1, "mulaw": 1}
    assert (out / "manifest.csv").read_bytes() == manifest
    assert not list(out.rglob("*.part"))


def test_changed_input_or_options_are_not_reused(corpus, tmp_path):
    out = tmp_path / "out"
    generate(config(corpus, out), progress=False)
    again = generate(config(corpus, out, seed=9), progress=False)
    assert again.reused == {"reference": 2}  # a reference does not depend on the seed
    assert again.new == {family: 2 * len(LEVELS) for family in FAMILIES}
    write_clip(corpus / "clip0.wav", seed=5)  # new content under the same name
    os.utime(corpus / "clip0.wav", ns=(1, 1))
    changed = generate(config(corpus, out, seed=9), progress=False)
    assert changed.new == {"reference": 1, **{family: len(LEVELS) for family in FAMILIES}}
    assert changed.reused == {"reference": 1, **{family: len(LEVELS) for family in FAMILIES}}


def test_second_run_on_the_same_output_is_refused_while_one_holds_it(corpus, tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".jndlab-lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(GenerateError, match="another run is writing to"):
            generate(config(corpus, out), progress=False)


def test_unknown_family_and_missing_input_are_clear(corpus, tmp_path):
    with pytest.raises(GenerateError, match="unknown family nope; choose from"):
        generate(config(corpus, tmp_path / "o", families=("nope",)), progress=False)
    with pytest.raises(GenerateError, match="input folder .*missing does not exist"):
        generate(config(tmp_path / "missing", tmp_path / "o"), progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenerateError, match="holds no audio files"):
        generate(config(empty, tmp_path / "o"), progress=False)


# ------------------------------------------------------------------ headroom


def test_reference_is_turned_down_rather_than_a_stimulus_clipped(tmp_path):
    """A clip with sharp peaks: loudness-matched EQ stimuli would exceed full scale."""
    root = tmp_path / "input"
    root.mkdir()
    rate = 16000
    t = np.arange(rate) / rate
    audio = 0.05 * np.sin(2 * np.pi * 300 * t) * (1 - np.cos(2 * np.pi * 3 * t)) / 2
    for start in range(0, rate, 4000):
        audio[start + 100 : start + 104] += [0.9, -0.9, 0.9, -0.9]
    sf.write(str(root / "clicks.wav"), audio.astype(np.float32), rate, subtype="FLOAT")
    write_clip(root / "plain.wav")
    out = tmp_path / "out"
    messages: list[str] = []
    summary = generate(config(root, out, families=("eq", "mulaw")), progress=False, log=messages.append)
    assert not summary.failed and summary.num_stimuli == 2 * 2 * len(LEVELS)
    rows = {row.stimulus_id: row for row in read_manifest(out / "manifest.csv", check_files=True)}
    assert rows["clicks__reference"].params["headroom_db"] > 0
    assert rows["clicks__reference"].loudness_lufs < -23.0
    assert "headroom_db" not in rows["plain__reference"].params
    assert any("turning the reference down" in message for message in messages)
    for row in rows.values():
        audio_out, _ = sf.read(str(row.resolve(out)), dtype="float32")
        assert np.max(np.abs(audio_out)) <= 1.0
    again = generate(config(root, out, families=("eq", "mulaw")), progress=False, log=messages.append)
    assert again.num_computed == 0 and again.num_reused == len(rows)  # the decision was journaled
    generate(config(root, tmp_path / "pool", families=("eq", "mulaw")), workers=2, progress=False, log=messages.append)
    assert (tmp_path / "pool" / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
