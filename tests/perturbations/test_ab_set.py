"""perturbations.ab_set: an A/B preference stimulus set from folders of system outputs."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from perturbations.__main__ import main as cli
from perturbations.ab_set import ABSetError, build_ab_set
from perturbations.loudness import loudness_lufs
from perturbations.manifest import read_manifest, verify_files

SR = 16000


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    x = sum(np.sin(2 * np.pi * 150 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    return (0.1 * x * (0.3 + np.sin(2 * np.pi * 2.5 * t) ** 2)).astype(np.float32)


@pytest.fixture
def folders(tmp_path):
    """clean/, two systems at other levels (-10 dB and +6 dB) and a noisy anchor."""
    out = {name: tmp_path / name for name in ("clean", "quiet", "loud", "noisy")}
    for f in out.values():
        f.mkdir()
    (out["clean"] / "spk1").mkdir()
    for i, rel in enumerate(("a.wav", "spk1/b.wav")):
        clean = _speechlike(1.0, i)
        sf.write(out["clean"] / rel, clean, SR)
        for name, gain_db in (("quiet", -10.0), ("loud", 6.0), ("noisy", 0.0)):
            target = out[name] / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            noise = 0.02 * np.random.default_rng(10 + i).standard_normal(len(clean))
            sf.write(target, ((clean + noise) * 10 ** (gain_db / 20)).astype(np.float32), SR, subtype="FLOAT")
    return out


def _build(folders, out, **kwargs):
    return build_ab_set(
        folders["clean"],
        {"quiet": folders["quiet"], "loud": folders["loud"]},
        out,
        anchor=("noisy", folders["noisy"]),
        **kwargs,
    )


def test_every_output_is_loudness_matched_to_its_clean_clip_and_nothing_clips(folders, tmp_path):
    summary = _build(folders, tmp_path / "set")
    rows = read_manifest(summary.manifest)
    verify_files(rows, summary.manifest.parent, str(summary.manifest))
    assert summary.items == 2 and summary.systems == ["loud", "quiet"] and summary.anchor == "noisy"
    assert {r.stimulus_id for r in rows if r.is_reference} == {"a", "spk1-b"}
    by_item = {}
    for row in rows:
        audio, rate = sf.read(row.resolve(summary.manifest.parent), dtype="float32")
        assert rate == SR and len(audio) == SR and np.max(np.abs(audio)) <= 10 ** (-1 / 20) + 1e-6
        by_item.setdefault(row.reference, {})[row.family] = loudness_lufs(audio, SR)
        assert row.params["system"] == row.family and "gain_db" in row.params
    for item, loudness in by_item.items():
        assert set(loudness) == {"reference", "quiet", "loud", "noisy"}
        assert max(loudness.values()) - min(loudness.values()) < 0.5, (item, loudness)
    gains = {r.stimulus_id: r.params["gain_db"] for r in rows}
    assert gains["a__quiet"] - gains["a__loud"] == pytest.approx(16.0, abs=0.01)  # the same audio 16 dB apart


def test_without_matching_the_outputs_keep_their_own_level(folders, tmp_path):
    summary = _build(folders, tmp_path / "set", match_loudness=False)
    rows = {r.stimulus_id: r for r in read_manifest(summary.manifest)}
    # Only the item-wide turn-down (the loud system would clip otherwise) is applied.
    assert rows["a__loud"].params["gain_db"] == rows["a__quiet"].params["gain_db"] == rows["a"].params["gain_db"]
    assert rows["a__loud"].loudness_lufs - rows["a__quiet"].loudness_lufs == pytest.approx(16.0, abs=0.5)


def test_a_rebuild_gives_identical_bytes(folders, tmp_path):
    first = _build(folders, tmp_path / "one").manifest.read_text()
    second = _build(folders, tmp_path / "two").manifest.read_text()
    strip = lambda text: [line.rsplit(",", 3)[0] for line in text.splitlines()]  # noqa: E731 - source paths differ
    assert strip(first) == strip(second)


def test_a_missing_output_is_named(folders, tmp_path):
    (folders["loud"] / "spk1" / "b.wav").unlink()
    with pytest.raises(ABSetError, match=r"loud lacks 1 \(spk1/b.wav\)"):
        _build(folders, tmp_path / "set")


def test_a_wrong_sample_rate_a_wrong_length_and_a_corrupt_file_are_named(folders, tmp_path):
    bad = folders["quiet"] / "a.wav"
    sf.write(bad, _speechlike(1.0, 0)[::2], SR // 2)
    with pytest.raises(ABSetError, match=r"quiet/a.wav: sample rate is 8000 Hz, expected 16000 Hz"):
        _build(folders, tmp_path / "set")
    sf.write(bad, _speechlike(0.9, 0), SR)
    with pytest.raises(ABSetError, match=r"quiet/a.wav: 14400 samples, but the clean clip .* has 16000"):
        _build(folders, tmp_path / "set")
    bad.write_bytes(b"RIFF not really a wav file")
    with pytest.raises(ABSetError, match=r"quiet/a.wav: not readable as audio"):
        _build(folders, tmp_path / "set")
    assert not (tmp_path / "set" / "manifest.csv").exists()


def test_names_and_counts_are_checked(folders, tmp_path):
    with pytest.raises(ABSetError, match="at least two systems"):
        build_ab_set(folders["clean"], {"quiet": folders["quiet"]}, tmp_path / "s")
    with pytest.raises(ABSetError, match="system name 'reference'"):
        build_ab_set(folders["clean"], {"reference": folders["quiet"], "loud": folders["loud"]}, tmp_path / "s")
    with pytest.raises(ABSetError, match="anchor 'loud' is also one of the compared systems"):
        build_ab_set(
            folders["clean"],
            {"quiet": folders["quiet"], "loud": folders["loud"]},
            tmp_path / "s",
            anchor=("loud", folders["noisy"]),
        )
    with pytest.raises(ABSetError, match="does_not_exist: not a folder"):
        build_ab_set(tmp_path / "does_not_exist", {"quiet": folders["quiet"], "loud": folders["loud"]}, tmp_path / "s")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ABSetError, match="empty: no audio files"):
        build_ab_set(tmp_path / "empty", {"quiet": folders["quiet"], "loud": folders["loud"]}, tmp_path / "s")


def test_the_cli_builds_a_subset_and_reports_errors(folders, tmp_path, capsys):
    code = cli(
        [
            "ab-set",
            "--clean",
            str(folders["clean"]),
            "--system",
            f"quiet={folders['quiet']}",
            "--system",
            f"loud={folders['loud']}",
            "--anchor",
            f"noisy={folders['noisy']}",
            "--out",
            str(tmp_path / "set"),
            "--max-items",
            "1",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "1 items x 2 systems (loud, quiet), anchor noisy" in out
    assert len([r for r in read_manifest(tmp_path / "set" / "manifest.csv") if r.is_reference]) == 1
    code = cli(
        [
            "ab-set",
            "--clean",
            str(folders["clean"]),
            "--system",
            f"quiet={folders['quiet']}",
            "--out",
            str(tmp_path / "s2"),
        ]
    )
    assert code != 0 and "at least two systems" in capsys.readouterr().err
