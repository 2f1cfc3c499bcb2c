"""manifest.csv: round trip, canonical order, and clear errors naming the file and line."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import random
import re

import pytest

from perturbations.manifest import (
    COLUMNS,
    REQUIRED_COLUMNS,
    ManifestError,
    ManifestRow,
    read_manifest,
    render_manifest,
    write_manifest,
)


def _row(sid: str, ref: str, family: str, level: float, content: bytes, **extra) -> ManifestRow:
    return ManifestRow(
        stimulus_id=sid,
        reference=ref,
        path=f"{family}/{sid}.wav",
        family=family,
        level=level,
        params=extra.pop("params", {"snr_db": 40.0 - level / 4, "color": "pink"}),
        seed=int(hashlib.sha256(sid.encode()).hexdigest()[:8], 16),
        sample_rate=16000,
        num_samples=32000,
        sha256=hashlib.sha256(content).hexdigest(),
        reference_path=f"reference/{ref}.wav",
        loudness_lufs=-23.0,
        source="speaker1/a.wav",
        speaker="speaker1",
        jndlab_version="test",
        **extra,
    )


def _rows() -> list[ManifestRow]:
    rows = []
    for item in ("b", "a"):
        ref = f"{item}__reference"
        rows.append(_row(ref, ref, "reference", 0.0, item.encode(), params={"gain_db": -1.5}))
        for family in ("noise", "clipping"):
            for level in (0.0, 16.67, 50.0, 100.0):
                sid = f"{item}__{family}__L{level:g}"
                rows.append(_row(sid, ref, family, level, sid.encode()))
    return rows


def test_round_trip_preserves_every_field(tmp_path):
    rows = _rows()
    path = write_manifest(tmp_path / "manifest.csv", rows)
    back = read_manifest(path)
    assert sorted(back, key=lambda r: r.stimulus_id) == sorted(rows, key=lambda r: r.stimulus_id)
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert tuple(header) == COLUMNS


def test_order_is_canonical_whatever_the_input_order():
    rows = _rows()
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert render_manifest(shuffled) == render_manifest(rows)
    ordered = list(csv.DictReader(io.StringIO(render_manifest(shuffled))))
    # each reference row comes first, then its stimuli by family and numeric level
    assert [r["stimulus_id"] for r in ordered[:5]] == [
        "a__reference",
        "a__clipping__L0",
        "a__clipping__L16.67",
        "a__clipping__L50",
        "a__clipping__L100",
    ]


def test_params_are_canonical_json_with_units_in_keys(tmp_path):
    path = write_manifest(tmp_path / "manifest.csv", _rows())
    record = next(r for r in csv.DictReader(io.StringIO(path.read_text())) if r["family"] == "noise")
    assert record["params"] == '{"color":"pink","snr_db":40.0}'


def test_write_is_atomic_and_leaves_no_part_file(tmp_path):
    write_manifest(tmp_path / "manifest.csv", _rows())
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


def test_unknown_columns_are_kept_as_extras(tmp_path):
    path = write_manifest(tmp_path / "manifest.csv", _rows())
    text = path.read_text().splitlines()
    text = [text[0] + ",note"] + [line + ",hello" for line in text[1:]]
    path.write_text("\n".join(text) + "\n")
    rows = read_manifest(path)
    assert all(row.extras == {"note": "hello"} for row in rows)


def _corrupt(tmp_path, column: str, value: str, line: int = 3):
    path = write_manifest(tmp_path / "manifest.csv", _rows())
    records = list(csv.DictReader(io.StringIO(path.read_text())))
    records[line - 2][column] = value
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return path


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("params", "{not json", "is not valid JSON"),
        ("params", '{"snr_db": NaN}', "NaN is not a JSON number"),
        ("params", '{"snr_db": Infinity}', "Infinity is not a JSON number"),
        ("params", "[1, 2]", "must be a JSON object"),
        ("params", "", "is empty"),
        ("level", "abc", "must be a number"),
        ("level", "101", "must lie in [0, 100]"),
        ("level", "nan", "must lie in [0, 100]"),
        ("level", "-inf", "must lie in [0, 100]"),
        ("seed", "1.5", "must be an integer"),
        ("seed", "-1", "must be >= 0"),
        ("num_samples", "0", "must be >= 1"),
        ("sha256", "xyz", "must be 64 hex digits"),
        ("path", "/abs/file.wav", "must be relative"),
        ("path", "../up.wav", "must be relative"),
        ("path", "a\\b.wav", "must be relative"),
        ("stimulus_id", "", "is empty"),
        ("stimulus_id", "a b", "characters outside"),
        ("stimulus_id", "a\x00", "characters outside"),
        ("loudness_lufs", "loud", "must be a number"),
    ],
)
def test_bad_cell_is_reported_with_file_line_and_column(tmp_path, column, value, message):
    path = _corrupt(tmp_path, column, value, line=4)
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    assert str(caught.value).startswith(f"{path}: line 4, column {column!r}: ")
    assert message in str(caught.value)
    assert (caught.value.line, caught.value.field) == (4, column)


def test_an_empty_seed_is_no_seed(tmp_path):
    path = _corrupt(tmp_path, "seed", "", line=4)
    rows = read_manifest(path)
    assert rows[2].seed is None and rows[2].line == 4
    assert render_manifest(rows) == path.read_text()  # and it is written back empty


def test_missing_column_is_named(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("stimulus_id,reference,path\nx,x,x.wav\n")
    with pytest.raises(
        ManifestError, match=r"manifest.csv: line 1: missing required column\(s\): family, level"
    ) as caught:
        read_manifest(path)
    assert caught.value.line == 1


def test_ragged_line_is_reported(tmp_path):
    path = write_manifest(tmp_path / "manifest.csv", _rows())
    lines = path.read_text().splitlines()
    lines[2] += ",surplus"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r": line 3: wrong number of fields"):
        read_manifest(path)


def test_undecodable_manifest_is_named(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes(b"stimulus_id,\xff\n")
    with pytest.raises(ManifestError, match=r"manifest.csv: cannot read the manifest as UTF-8"):
        read_manifest(path)


def test_cross_row_rules(tmp_path):
    rows = _rows()
    with pytest.raises(ManifestError, match="duplicate stimulus_id"):
        write_manifest(tmp_path / "m.csv", rows + [rows[3]])
    orphan = _row("x__noise__L10", "x__reference", "noise", 10.0, b"x")
    with pytest.raises(ManifestError, match="names reference 'x__reference', which has no row"):
        write_manifest(tmp_path / "m.csv", rows + [orphan])
    not_a_reference = _row("y__noise__L10", rows[1].stimulus_id, "noise", 10.0, b"y")
    with pytest.raises(ManifestError, match="which is not a reference row"):
        write_manifest(tmp_path / "m.csv", rows + [not_a_reference])
    same_path = dataclasses.replace(rows[2], stimulus_id="b__noise__copy")
    with pytest.raises(ManifestError, match="share the path"):
        write_manifest(tmp_path / "m.csv", rows + [same_path])
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize(
    ("line", "column", "value", "message"),
    [
        # line 2 is a__reference, line 4 a stimulus of it (canonical order)
        (4, "num_samples", "31999", "has num_samples=31999 but its reference 'a__reference' (line 2) has 32000"),
        (4, "sample_rate", "8000", "sample-aligned with its reference"),
        (4, "reference", "a__clipping__L0", "which is not a reference row"),
        (4, "reference", "ghost", "names reference 'ghost', which has no row"),
        (2, "reference", "a__clipping__L0", "must name itself as its reference"),
        (2, "level", "5", "must have level 0"),
    ],
)
def test_cross_row_errors_name_line_and_column(tmp_path, line, column, value, message):
    path = _corrupt(tmp_path, column, value, line=line)
    with pytest.raises(ManifestError, match=re.escape(message)) as caught:
        read_manifest(path)
    assert str(caught.value).startswith(f"{path}: line {line}, column {column!r}: ")
    assert (caught.value.line, caught.value.field) == (line, column)


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(ManifestError, match=r"nope.csv: manifest not found"):
        read_manifest(tmp_path / "nope.csv")


def test_check_files_verifies_existence_and_sha256(tmp_path):
    rows = _rows()
    for row in rows:  # content whose sha256 the rows already carry
        content = row.stimulus_id.encode() if row.family != "reference" else row.stimulus_id[0].encode()
        target = row.resolve(tmp_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    path = write_manifest(tmp_path / "manifest.csv", rows)
    assert len(read_manifest(path, check_files=True)) == len(rows)
    rows[4].resolve(tmp_path).write_bytes(b"tampered")
    with pytest.raises(ManifestError, match=f"{rows[4].stimulus_id}.*has sha256") as caught:
        read_manifest(path, check_files=True)
    assert caught.value.field == "sha256" and caught.value.line is not None
    rows[5].resolve(tmp_path).unlink()
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(path, check_files=True)
