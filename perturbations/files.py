"""Atomic file writes shared by every jndlab package.

A file is written to a temporary file in its own folder (``.NAME.XXXX.part``), flushed to
disk with ``fsync``, then renamed over ``path`` with ``os.replace``. A rename within one
folder is atomic on POSIX filesystems, so a reader (or a rerun after a process was killed
at any point, SIGKILL included) sees either the old file or the whole new one, never half
of it. Stale ``.*.part`` files of a killed writer are left in the folder; their names start
with a dot so that folder scans skip them, and ``perturbations generate`` removes them at start.
The file gets the permissions a plain ``open()`` would give it (0o666 less the umask), or
the ``mode`` asked for (e.g. 0o600 for secrets) from before its first byte is written.

Sources: POSIX ``rename(2)`` (atomic replacement of the target); the write-fsync-rename
pattern of facebookresearch/denoiser's checkpoints (DESIGN.md, "Checkpoints").
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from perturbations.provenance import json_safe

PART_SUFFIX = ".part"


class atomic_path:
    """Context manager: yields a temporary path next to ``path``; on success renames it to ``path``.

    The caller writes the temporary file (by any means: ``Path.write_bytes``, ``torch.save``,
    ``matplotlib.savefig`` ...). On a clean exit it is fsync'd (unless ``fsync=False``) and
    moved over ``path`` with ``os.replace``; on an exception it is deleted and ``path`` is
    left as it was. The parent folder is created if missing.

    ``fsync=False`` skips the flush to disk: the rename stays atomic against a killed process
    (the page cache survives it) but not against a power cut. Use it only where a lost file is
    detected and redone anyway (e.g. stimuli, whose sha256 the generate journal checks).
    ``mode``: the file's permission bits (e.g. ``0o600``); default 0o666 less the umask.

    Raises ``OSError`` when the folder cannot be created or the file cannot be flushed or renamed.
    """

    def __init__(self, path: str | os.PathLike, *, fsync: bool = True, mode: int | None = None):
        self.path = Path(path)
        self.fsync = fsync
        self.mode = mode

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=PART_SUFFIX, dir=self.path.parent)
        self.tmp = Path(tmp)
        try:  # mkstemp makes 0o600 files: give the one asked for, or what open() would
            os.fchmod(fd, _default_mode() if self.mode is None else self.mode)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        try:
            if self.fsync:
                _fsync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    ``fsync``, ``mode``: see ``atomic_path``. Returns ``path`` as a ``Path``.
    Raises ``OSError`` when the folder or file cannot be written.
    """
    path = Path(path)
    with atomic_path(path, fsync=fsync, mode=mode) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(
    path: str | os.PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = True, mode: int | None = None
) -> Path:
    """Write ``text`` to ``path`` atomically, encoded as ``encoding`` (UTF-8 by default).

    Newlines are written as given (no platform translation). ``fsync``, ``mode``: see
    ``atomic_path``. Returns ``path`` as a ``Path``.
    Raises ``OSError`` when the folder or file cannot be written; ``UnicodeEncodeError``
    when ``text`` cannot be encoded (nothing is written then).
    """
    return atomic_write_bytes(path, text.encode(encoding), fsync=fsync, mode=mode)


def atomic_write_json(
    path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False, fsync: bool = True
) -> Path:
    """Write ``obj`` as strict JSON (RFC 8259) to ``path`` atomically, with a final newline.

    Non-finite floats (NaN, ±inf) become ``null`` (``provenance.json_safe``), so every reader
    can parse the file. Returns ``path`` as a ``Path``.
    Raises ``TypeError`` for objects JSON cannot hold (nothing is written then) and ``OSError``
    when the folder or file cannot be written.
    """
    text = json.dumps(json_safe(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    return atomic_write_text(path, text + "\n", fsync=fsync)


def _default_mode() -> int:
    """0o666 less the process umask: the mode ``open(path, "w")`` gives a new file."""
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read without changing it (os.umask sets it, racing other threads)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
