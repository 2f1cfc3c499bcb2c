"""Resume and exclusion: the append-only journal of finished jobs, and the output folder's lock.

The main process appends each finished row to ``OUTPUT/.jndlab-journal.jsonl`` and fsyncs
it. A job counts as done only when its key is in the journal AND its file exists with the
journaled sha256; anything else is redone.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from perturbations.generate.jobs import Job
from perturbations.generate.plan import GenerateError
from perturbations.manifest import ManifestRow, row_from_dict, sha256_file

JOURNAL_NAME = ".jndlab-journal.jsonl"
LOCK_NAME = ".jndlab-lock"


class Journal:
    """Append-only record of finished jobs; a torn last line (a kill mid-append) is ignored."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, dict[str, str]] = {}
        self.headroom_db: dict[str, float] = {}  # item_id -> extra attenuation decided earlier
        if path.exists():
            with open(path, "rb") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                        if "headroom_db" in entry:
                            self.headroom_db[entry["item_id"]] = float(entry["headroom_db"])
                        else:
                            self.done[entry["key"]] = entry["row"]
                    except (ValueError, KeyError, TypeError):
                        continue
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run, closed by close()

    def finished(self, job: Job) -> ManifestRow | None:
        """The journaled row, if the job is in the journal and its file is intact (same path, same sha256)."""
        record = self.done.get(job.key)
        if record is None:
            return None
        try:
            row = row_from_dict(record)
        except ValueError:
            return None
        audio_path = Path(job.out_root) / row.path
        if row.path != job.rel_path or not audio_path.is_file() or sha256_file(audio_path) != row.sha256:
            return None
        return row

    def add(self, key: str, row: dict[str, str]) -> None:
        # one write per line, then fsync: after a kill the journal never names a clip that is not on disk
        self._append({"key": key, "row": row})
        self.done[key] = row

    def add_headroom(self, item_id: str, headroom_db: float) -> None:
        self._append({"item_id": item_id, "headroom_db": headroom_db})
        self.headroom_db[item_id] = headroom_db

    def _append(self, entry: dict) -> None:
        self.handle.write(json.dumps(entry, sort_keys=True) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


class OutputLock:
    """One run per output folder at a time; the kernel drops the lock when a process dies.

    ``flock`` on ``OUT/.jndlab-lock``. Entering raises ``GenerateError`` when another process
    holds it, ``OSError`` when the lock file cannot be opened.
    """

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME

    def __enter__(self) -> OutputLock:
        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise GenerateError(
                f"another run is writing to {self.path.parent}; wait for it or choose another --output"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
