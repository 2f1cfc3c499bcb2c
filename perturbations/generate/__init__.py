"""The stimulus engine: plan (inputs × families × levels), run the jobs, write manifest.csv.

A stimulus is a pure function of (reference, family, level, seed), so every job is
independent and can run anywhere: in this process, in local worker processes, or on a
Dask cluster. The manifest does not depend on the runner: rows are sorted canonically and
hold nothing about timing or workers.

Two phases. Phase 1 reads each input, checks it, resamples it if asked, normalises it to
``target_lufs`` and writes it once as the reference. Phase 2 derives every stimulus from
that written reference (checked against its sha256), so what a listener hears as the
reference is exactly what the stimulus was made from.

Resume. The main process appends each finished row to ``OUTPUT/.jndlab-journal.jsonl``
(fsync'd). A job counts as done only when its key is in the journal AND its file exists
with the journaled sha256; anything else is redone. Audio and the manifest are written
atomically, and stale ``.*.part`` files of a killed run are removed at start, so a run
killed at any point (SIGKILL included) resumes with the same command.

Modules, one concern each:
  ``plan``     settings (``GenerateConfig``), levels, seeds, ids, the job lists;
  ``jobs``     one job: ``prepare_reference``, ``run_job``, its manifest row;
  ``runners``  serial, local processes (``--workers``), Dask (``--scheduler``);
  ``journal``  the resume journal and the output folder's lock;
  ``run``      ``generate``: the phases, headroom rounds and the manifest.
"""

from perturbations.generate.plan import GenerateConfig, GenerateError
from perturbations.generate.run import Summary, generate

__all__ = ["GenerateConfig", "GenerateError", "Summary", "generate"]
