"""Triplet reader/writer and DPAM level parsing, including the public DPAM files."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.judgments import JudgmentsError
from analysis.triplets import parse_dpam_levels, read_triplets, triplet_rows, write_triplets

DPAM_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "dpam"
needs_dpam = pytest.mark.skipif(not DPAM_DIR.is_dir(), reason=f"public DPAM files not found at {DPAM_DIR}")


def _write(tmp_path, text, name="t.txt"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_reader_accepts_extra_columns_spaces_comments_blank_lines(tmp_path):
    p = _write(tmp_path, "# header comment\n\na.wav\tb.wav\t1\t crickets\textra\n  \nc.wav\t d.wav \t 0 \n")
    df = read_triplets(p, audio_root="/nonexistent/root")
    assert df["ref"].tolist() == ["a.wav", "c.wav"]
    assert df["perturbed"].tolist() == ["b.wav", "d.wav"]
    assert df["label"].tolist() == [1, 0]
    assert df["family"].tolist() == ["crickets", ""]
    assert df["line"].tolist() == [3, 5]
    assert df["ref_audio"].iloc[0] == str(Path("/nonexistent/root") / "a.wav")


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("a.wav\tb.wav\t2", "label must be 0"),
        ("a.wav\tb.wav\tyes", "label must be 0"),
        ("a.wav\tb.wav", "at least 3"),
        ("a.wav b.wav 1", "at least 3"),
        ("\tb.wav\t1", "empty path"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, bad_line, message):
    p = _write(tmp_path, f"x.wav\ty.wav\t0\n# c\n{bad_line}\n")
    with pytest.raises(ValueError, match=message) as err:
        read_triplets(p)
    assert f"{p}:3:" in str(err.value)


def test_round_trip_and_byte_identical(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"refs/r{rng.integers(5)}.wav", f"pert/p{rng.integers(50)}.wav", int(rng.integers(2))) for _ in range(40)]
    rows.append(rows[0])  # repeated judgments are kept
    a, b = tmp_path / "a.txt", tmp_path / "sub" / "b.txt"
    write_triplets(rows, a)
    write_triplets(list(reversed(rows)), b)  # order of input must not matter
    assert a.read_bytes() == b.read_bytes()
    write_triplets(pd.DataFrame(rows, columns=["ref", "perturbed", "label"]), b)
    assert a.read_bytes() == b.read_bytes()
    back = read_triplets(a)
    assert list(zip(back["ref"], back["perturbed"], back["label"])) == sorted(rows)
    assert not [p for p in tmp_path.rglob("*.tmp")]  # temp files cleaned up
    # three columns exactly
    assert {len(line.split("\t")) for line in a.read_text().splitlines()} == {3}


def test_writer_rejects_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="label"):
        write_triplets([("a.wav", "b.wav", 2)], tmp_path / "x.txt")
    with pytest.raises(ValueError, match="tabs"):
        write_triplets([("a\t.wav", "b.wav", 1)], tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()


def test_parse_dpam_levels():
    lin = parse_dpam_levels("0.0747_f4_script3_produced_clipped_132.5.wav")
    assert lin["levels"] == (0.0747,) and lin["level"] == 0.0747
    assert lin["clip"] == "f4_script3_produced_clipped_132.5.wav"
    multi = parse_dpam_levels("some/dir/93.75_-0.0_0.33_f6_script2_produced_clipped_92.5.wav")
    assert multi["levels"] == (93.75, -0.0, 0.33) and multi["level"] is None
    rev = parse_dpam_levels("reverb_1/89.77_16.0_f5_script4_produced_clipped_40.0.wav_h096_Hotel_Ballroom_2txts.wav")
    assert rev["levels"] == (89.77, 16.0) and rev["drr_level"] == 89.77 and rev["rt60_level"] == 16.0
    assert rev["ir"] == "h096_Hotel_Ballroom_2txts" and rev["set"] == 1
    assert rev["clip"] == "f5_script4_produced_clipped_40.0.wav"
    for name in ("clean.wav", "f4_script5_produced.wav", "12.wav", "0.5_notes.txt"):
        assert parse_dpam_levels(name) is None


@needs_dpam
def test_public_dpam_linear():
    df = read_triplets(DPAM_DIR / "dataset_linear.txt")
    assert len(df) == 9438
    assert df["label"].value_counts().to_dict() == {0: 4526, 1: 4912}
    assert set(df["family"]) == {
        "crickets",
        "siren",
        "brown_noise",
        "applause",
        "pink_noise",
        "blue_noise",
        "mp3",
        "reverb_noise",
    }
    ident = df[df["ref"] == df["perturbed"]]
    assert len(ident) == 1527 and int(ident["label"].sum()) == 61
    assert all(parse_dpam_levels(p) is not None for p in pd.concat([df["ref"], df["perturbed"]]))


@needs_dpam
def test_public_dpam_reverb():
    df = read_triplets(DPAM_DIR / "dataset_reverb.txt")
    assert len(df) == 2500
    assert df["label"].value_counts().to_dict() == {0: 1332, 1: 1168}
    assert (df["family"] == "").all()
    kinds = {parse_dpam_levels(p)["kind"] for p in pd.concat([df["ref"], df["perturbed"]])}
    assert kinds == {"reverb"}


def _judgments(rows):
    """A tidy judgments table (the columns triplet_rows reads) from (root, kind, ref, test, different)."""
    return pd.DataFrame(
        [
            {
                "audio_root": root,
                "kind": kind,
                "reference_path": ref,
                "test_path": test,
                "response_different": different,
            }
            for root, kind, ref, test, different in rows
        ]
    )


def test_triplet_rows_from_judgments(tmp_path):
    one = str(tmp_path / "one")
    table = _judgments(
        [
            (one, "main", "audio/r.wav", "audio/t1.wav", 1.0),
            (one, "catch_identical", "audio/r.wav", "audio/r.wav", 0.0),
            (one, "main", "audio/r.wav", "audio/t2.wav", float("nan")),  # no same/different answer
            (one, "screening", None, None, float("nan")),
            (one, "main", "audio/r.wav", "audio/t3.wav", 0.0),
        ]
    )
    rows, root = triplet_rows(table)
    assert root == one
    assert rows.values.tolist() == [["audio/r.wav", "audio/t1.wav", 1], ["audio/r.wav", "audio/t3.wav", 0]]
    rows, _ = triplet_rows(table, kinds=("main", "catch_identical"))
    assert rows["label"].tolist() == [1, 0, 0] and rows["label"].dtype == "int64"
    write_triplets(rows, tmp_path / "t.txt")  # and the writer takes them as they are
    assert read_triplets(tmp_path / "t.txt")[["ref", "perturbed", "label"]].values.tolist() == sorted(
        rows.values.tolist()
    )


def test_triplet_rows_from_several_audio_roots(tmp_path):
    table = _judgments(
        [
            (str(tmp_path / "one"), "main", "a/r.wav", "a/t.wav", 1.0),
            (str(tmp_path / "two"), "main", "b/r.wav", "b/t.wav", 0.0),
        ]
    )
    with pytest.raises(JudgmentsError, match="2 experiments with different audio roots"):
        triplet_rows(table)
    rows, root = triplet_rows(table, relative_to=tmp_path / "one")
    assert root == str((tmp_path / "one").resolve())
    assert rows.values.tolist() == [["a/r.wav", "a/t.wav", 1], ["../two/b/r.wav", "../two/b/t.wav", 0]]


def test_the_triplet_line_has_one_home_with_its_rules():
    """analysis.triplets.write_triplets and the web app's download build lines with
    listening_test.dpam_triplets.triplet_line; its rules refuse what the format cannot hold."""
    import inspect

    from listening_test import export
    from listening_test.dpam_triplets import triplet_line

    assert triplet_line("r.wav", "p.wav", 1) == "r.wav\tp.wav\t1\n"
    assert triplet_line("r.wav", "p.wav", 0, "noise") == "r.wav\tp.wav\t0\tnoise\n"
    for bad in (
        ("", "p.wav", 0),
        ("r\t.wav", "p.wav", 0),
        (" r.wav", "p.wav", 0),
        ("r.wav", "p\n", 1),
        ("r.wav", "p.wav", 2),
        ("r.wav", "p.wav", True),
        ("r.wav", "p.wav", "1"),
    ):
        with pytest.raises(ValueError):
            triplet_line(*bad)
    with pytest.raises(ValueError, match="extra"):
        triplet_line("r.wav", "p.wav", 1, "a\tb")
    assert "triplet_line(" in inspect.getsource(export.triplets)
