"""Manifest validation: a bad manifest creates nothing and says which row and field."""
from __future__ import annotations

import csv
import shutil

import pytest

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


@pytest.mark.parametrize("mutate,message", [
    (lambda rows: rows[1].update(path="../../etc/passwd"), "outside the manifest"),
    (lambda rows: rows[1].update(path="/etc/passwd"), "relative"),
    (lambda rows: rows[1].update(level="loud"), "level"),
    (lambda rows: rows[1].update(params="{bad"), "params"),
    (lambda rows: rows[1].update(reference="ghost"), "ghost"),
    (lambda rows: rows[1].update(stimulus_id=rows[0]["stimulus_id"]), "duplicate"),
    (lambda rows: rows[1].update(path="audio/missing.wav"), "not found"),
    (lambda rows: rows[1].update(sha256="0" * 64), "sha256"),
])
def test_bad_rows_are_rejected(manifest_path, tmp_path, mutate, message):
    path = _rewrite(manifest_path, tmp_path / "set", mutate)
    with pytest.raises(ManifestError, match=message):
        read_manifest(path, verify_hashes=True)


def test_missing_columns(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("stimulus_id,path\nx,y.wav\n")
    with pytest.raises(ManifestError, match="missing columns"):
        read_manifest(path)
