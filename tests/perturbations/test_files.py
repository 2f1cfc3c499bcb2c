"""Atomic writes (perturbations.files) and strict JSON (provenance.json_safe)."""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest

from perturbations import files
from perturbations.files import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from perturbations.provenance import json_safe


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(files.PART_SUFFIX))


def test_write_bytes_creates_folders_and_replaces_old_content(tmp_path):
    path = tmp_path / "a" / "b" / "x.bin"
    assert atomic_write_bytes(path, b"first") == path
    assert path.read_bytes() == b"first"
    atomic_write_bytes(str(path), b"second")
    assert path.read_bytes() == b"second"
    assert _leftovers(path.parent) == []


def test_write_text_is_utf8_and_keeps_newlines_as_given(tmp_path):
    path = atomic_write_text(tmp_path / "t.txt", "a\r\nb\nµ")
    assert path.read_bytes() == "a\r\nb\nµ".encode()


def test_write_json_is_strict_json_with_a_final_newline(tmp_path):
    path = atomic_write_json(tmp_path / "j.json", {"auc": math.nan, "loss": [1.5, math.inf], "n": (1, 2)})
    text = path.read_text()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"auc": None, "loss": [1.5, None], "n": [1, 2]}


def test_write_json_refuses_what_json_cannot_hold_and_leaves_the_old_file(tmp_path):
    path = atomic_write_json(tmp_path / "j.json", {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert _leftovers(tmp_path) == []


def test_atomic_path_renames_on_success_only(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="mid-write"), atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith(".out.txt.")
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with atomic_path(path) as tmp:
        tmp.write_text("new")
        assert path.read_text() == "old"  # nothing visible before the rename
    assert path.read_text() == "new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_happens_before_the_rename_unless_switched_off(tmp_path, monkeypatch, fsync):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write_bytes(tmp_path / "f", b"x", fsync=fsync)
    assert calls == (["fsync", "replace"] if fsync else ["replace"])


def test_failed_rename_removes_the_temporary_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write_text(tmp_path / "f.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_json_safe_replaces_every_non_finite_float_recursively():
    record = {"a": [np.float64("nan"), {"b": -math.inf}], "c": (1.0, "nan"), "d": None, "e": 2}
    assert json_safe(record) == {"a": [None, {"b": None}], "c": [1.0, "nan"], "d": None, "e": 2}
    assert json_safe(math.nan) is None and json_safe(0.5) == 0.5


def test_files_get_open_s_permissions_or_the_mode_asked_for(tmp_path):
    old = os.umask(0o027)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert (
            stat.S_IMODE(atomic_write_text(tmp_path / "a.txt", "x").stat().st_mode)
            == stat.S_IMODE(plain.stat().st_mode)
            == 0o640
        )
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
        assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o640
        secret = atomic_write_text(tmp_path / "secret.env", "KEY=1\n", mode=0o600)
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    finally:
        os.umask(old)
