"""Manifest validation: a bad manifest creates nothing and says which row and field."""

from __future__ import annotations

import csv
import shutil

import pytest

import perturbations.manifest as perturbations_manifest
from listening_test.manifest_import import ManifestError, ladders, read_manifest
from tests.listening_test.lt_helpers import LEVELS


def _rewrite(src, dst_folder, mutate):
    shutil.copytree(src.parent, dst_folder)
    path = dst_folder / "manifest.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fieldnames = list(rows[0])
    rows = mutate(rows) or rows
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_reads_the_fixture_manifest(manifest_path):
    rows = read_manifest(manifest_path, verify_hashes=True)
    assert len(rows) == 18
    ladder = ladders(rows)
    assert set(ladder) == {("ref_a", "noise"), ("ref_a", "mp3"), ("ref_b", "noise"), ("ref_b", "mp3")}
    assert ladder[("ref_a", "noise")] == list(LEVELS)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda rows: rows[1].update(path="../../etc/passwd"), "relative to the manifest's folder"),
        (lambda rows: rows[1].update(path="/etc/passwd"), "relative"),
        (lambda rows: rows[1].update(level="loud"), "level"),
        (lambda rows: rows[1].update(params="{bad"), "params"),
        (lambda rows: rows[1].update(reference="ghost"), "ghost"),
        (lambda rows: rows[1].update(stimulus_id=rows[0]["stimulus_id"]), "duplicate"),
        (lambda rows: rows[1].update(path="audio/missing.wav"), "not found"),
        (lambda rows: rows[1].update(sha256="0" * 64), "sha256"),
    ],
)
def test_bad_rows_are_rejected(manifest_path, tmp_path, mutate, message):
    path = _rewrite(manifest_path, tmp_path / "set", mutate)
    with pytest.raises(ManifestError, match=message):
        read_manifest(path, verify_hashes=True)


def test_missing_columns(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("stimulus_id,path\nx,y.wav\n")
    with pytest.raises(ManifestError, match="missing required column"):
        read_manifest(path)


def test_the_format_is_read_by_perturbations_manifest(manifest_path, tmp_path):
    """One reader, one row type, one error: what perturbations.manifest refuses, the import refuses
    with the same class and message; the import adds only its own checks."""
    assert ManifestError is perturbations_manifest.ManifestError
    rows = read_manifest(manifest_path)
    assert all(isinstance(r, perturbations_manifest.ManifestRow) for r in rows)
    assert rows == perturbations_manifest.read_manifest(manifest_path)
    path = _rewrite(manifest_path, tmp_path / "set", lambda rows: rows[2].update(seed="-3"))
    with pytest.raises(ManifestError) as ours:
        read_manifest(path)
    with pytest.raises(ManifestError) as theirs:
        perturbations_manifest.read_manifest(path)
    assert str(ours.value) == str(theirs.value)
    assert (ours.value.line, ours.value.field) == (4, "seed")


def test_a_link_out_of_the_folder_is_refused(manifest_path, tmp_path):
    def link_out(rows):
        target = tmp_path / "set" / rows[1]["path"]
        outside = tmp_path / "outside.wav"
        outside.write_bytes(target.read_bytes())
        target.unlink()
        target.symlink_to(outside)

    path = _rewrite(manifest_path, tmp_path / "set", link_out)
    with pytest.raises(ManifestError, match="points outside the manifest's folder") as caught:
        read_manifest(path)
    assert (caught.value.line, caught.value.field) == (3, "path")


def test_a_row_too_long_for_its_column_names_line_and_column(manifest_path, tmp_path):
    path = _rewrite(manifest_path, tmp_path / "set", lambda rows: rows[1].update(family="f" * 65))
    perturbations_manifest.read_manifest(path)  # the format allows it: the database column does not
    with pytest.raises(ManifestError, match=r"line 3, column 'family': family has 65 characters") as caught:
        read_manifest(path)
    assert str(caught.value).startswith(f"{path.resolve()}: ")
