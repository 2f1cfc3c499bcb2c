"""The run: references, then stimuli, then headroom rounds; journal, lock and manifest.

``generate(config)`` plans the jobs (``plan``), skips those the journal holds intact
(``journal``), hands the rest to a runner (``runners``), and writes ``manifest.csv`` with
every row sorted canonically, so the manifest does not depend on the runner. Audio and the
manifest are written atomically and stale ``.*.part`` files of a killed run are removed at
start: a run killed at any point (SIGKILL included) resumes with the same command.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from perturbations.audio import SUPPORTED_SAMPLE_RATES
from perturbations.files import PART_SUFFIX
from perturbations.generate.jobs import Job, JobResult, family_instance
from perturbations.generate.journal import JOURNAL_NAME, Journal, OutputLock
from perturbations.generate.plan import (
    SUBTYPES,
    GenerateConfig,
    GenerateError,
    plan_references,
    plan_stimuli,
    resolve_families,
)
from perturbations.generate.runners import Runner, make_runner
from perturbations.manifest import REFERENCE_FAMILY, ManifestRow, row_from_dict, write_manifest
from perturbations.provenance import code_version

MANIFEST_NAME = "manifest.csv"
HEADROOM_ROUNDS = 2  # at most this many times a reference is turned down to make room
HEADROOM_MARGIN_DB = 0.5  # beyond the measured excess: other levels of the ladder may peak higher


@dataclass
class Summary:
    """What a run did: clips made and reused per family, skipped inputs, failed stimuli, time in s."""

    output_dir: Path
    manifest_path: Path | None = None
    new: Counter = field(default_factory=Counter)  # per family, computed by this run
    reused: Counter = field(default_factory=Counter)  # per family, found finished in the journal
    failed: list[tuple[str, str]] = field(default_factory=list)  # (stimulus_id, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (input file, reason)
    elapsed_s: float = 0.0
    num_rows: int = 0

    @property
    def num_stimuli(self) -> int:
        return sum(n for family, n in (self.new + self.reused).items() if family != REFERENCE_FAMILY)

    @property
    def num_computed(self) -> int:
        return sum(self.new.values())

    @property
    def num_reused(self) -> int:
        return sum(self.reused.values())

    def format(self) -> str:
        rate = self.num_computed / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"generated {self.num_computed} clip(s), reused {self.num_reused} from an earlier run, "
            f"in {self.elapsed_s:.1f} s ({rate:.1f} clips/s)",
            f"  {'family':<12}{'new':>7}{'reused':>8}{'failed':>8}",
        ]
        failed_by_family = Counter(sid.split("__")[-2] if sid.count("__") >= 2 else "?" for sid, _ in self.failed)
        for family in sorted(
            set(self.new) | set(self.reused) | set(failed_by_family), key=lambda f: (f != REFERENCE_FAMILY, f)
        ):
            lines.append(f"  {family:<12}{self.new[family]:>7}{self.reused[family]:>8}{failed_by_family[family]:>8}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} input file(s):")
            lines += [f"  {source}: {reason}" for source, reason in self.skipped]
        if self.failed:
            lines.append(f"{len(self.failed)} stimulus/stimuli failed:")
            lines += [f"  {sid}: {reason}" for sid, reason in self.failed]
        if self.manifest_path is not None:
            lines.append(f"manifest: {self.manifest_path} ({self.num_rows} rows)")
        return "\n".join(lines)


def generate(
    config: GenerateConfig,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    runner: Runner | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Generate the stimulus set of ``config`` into ``config.output_dir`` and write its manifest.

    ``workers``: local processes (1: this process); ``scheduler``: a Dask scheduler address;
    ``runner``: a ready runner instead (not closed here). Output: float32 mono WAVs at
    ``config.sample_rate`` Hz under ``reference/`` and ``FAMILY/``, and ``manifest.csv``.
    Bad inputs and failing stimuli are reported through ``log`` and in the summary; the run
    goes on. Raises ``GenerateError`` for problems that stop the whole run (a bad setting,
    input folder or family option, another run on the same output, an unwritable output).
    """
    start = time.perf_counter()
    if config.sample_rate not in SUPPORTED_SAMPLE_RATES:
        raise GenerateError(
            f"--sample-rate must be one of {', '.join(map(str, SUPPORTED_SAMPLE_RATES))}, got {config.sample_rate}"
        )
    if config.subtype not in SUBTYPES:
        raise GenerateError(f"subtype must be one of {', '.join(SUBTYPES)}, got {config.subtype}")
    say = log or (lambda message: tqdm.write(message, file=sys.stderr))
    families = resolve_families(config.families if config.families is None else list(config.families))
    for name in families:  # fail fast on a bad --noise-dir or --rir-dir, before any work
        try:
            family_instance(name, config.family_options)
        except (ValueError, OSError, TypeError, RuntimeError) as error:
            raise GenerateError(f"family {name}: {error}") from None
    version = config.code_version or code_version()
    out_dir = Path(config.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise GenerateError(f"cannot create output folder {out_dir} ({error.strerror})") from None
    plan_references(config, version)  # fail on a missing or empty input before touching the output
    summary = Summary(output_dir=out_dir)

    with OutputLock(out_dir):
        for part in out_dir.rglob(f".*{PART_SUFFIX}"):  # half-written files of a killed run
            part.unlink(missing_ok=True)
        own_runner = runner is None
        runner = runner or make_runner(workers, scheduler)
        try:
            journal = Journal(out_dir / JOURNAL_NAME)
            try:
                rows = _run_all(config, version, families, runner, journal, summary, progress, say)
            finally:
                journal.close()
        finally:
            if own_runner:
                runner.close()
        summary.num_rows = len(rows)
        if rows:
            summary.manifest_path = write_manifest(out_dir / MANIFEST_NAME, rows)
    summary.elapsed_s = time.perf_counter() - start
    return summary


def _run_all(
    config: GenerateConfig,
    version: str,
    families: Sequence[str],
    runner: Runner,
    journal: Journal,
    summary: Summary,
    progress: bool,
    say: Callable[[str], None],
) -> list[ManifestRow]:
    """References, then stimuli; then headroom rounds for references whose stimuli would clip.

    make_stimulus never clips: it refuses (HeadroomError). Such a reference is turned down by
    the excess plus a margin and its whole ladder is redone, so that every ladder is complete
    and shares one reference. The decision is journaled, so a resumed run plans the same.
    The outcome depends only on the inputs, never on the runner.
    """
    computed: set[str] = set()
    headroom = dict(journal.headroom_db)
    reference_jobs = plan_references(config, version, headroom)
    reference_rows = _run_phase(reference_jobs, runner, journal, computed, "references", progress)
    for result in reference_rows.failures:
        summary.skipped.append((result.source, result.reason))
        say(f"skipped {result.source}: {result.reason}")
    references = {
        job.item_id: (job, reference_rows.rows[job.key]) for job in reference_jobs if job.key in reference_rows.rows
    }
    ladders: dict[str, tuple[dict[str, ManifestRow], list[JobResult]]] = {}
    todo = list(references)
    for round_index in range(HEADROOM_ROUNDS + 1):
        jobs = plan_stimuli(config, families, [references[item] for item in todo])
        outcome = _run_phase(jobs, runner, journal, computed, "stimuli" if round_index == 0 else "headroom", progress)
        needs: dict[str, float] = {}
        for item in todo:
            keys = {job.key for job in jobs if job.item_id == item}
            failures = [r for r in outcome.failures if r.item_id == item]
            ladders[item] = ({k: v for k, v in outcome.rows.items() if k in keys}, failures)
            excess = [r.headroom_needed_db for r in failures if r.headroom_needed_db is not None]
            if excess and round_index < HEADROOM_ROUNDS:
                needs[item] = max(excess)
        if not needs:
            break
        for item, excess_db in sorted(needs.items()):
            headroom[item] = round(headroom.get(item, 0.0) + excess_db + HEADROOM_MARGIN_DB, 2)
            journal.add_headroom(item, headroom[item])
            say(
                f"{references[item][0].source_rel}: stimuli would clip; turning the reference down {headroom[item]:.2f} dB and redoing its ladder"
            )
        retry = [job for job in plan_references(config, version, headroom) if job.item_id in needs]
        retried = _run_phase(retry, runner, journal, computed, "references", progress)
        for job in retry:
            if job.key in retried.rows:
                references[job.item_id] = (job, retried.rows[job.key])
        todo = [job.item_id for job in retry if job.key in retried.rows]

    rows: list[ManifestRow] = []
    for item, (job, row) in references.items():
        rows.append(row)
        _count(summary, job.key, row.family, computed)
        stimulus_rows, failures = ladders.get(item, ({}, []))
        for key, stimulus_row in stimulus_rows.items():
            rows.append(stimulus_row)
            _count(summary, key, stimulus_row.family, computed)
        for result in failures:
            summary.failed.append((result.stimulus_id, result.reason))
            say(f"failed {result.stimulus_id}: {result.reason}")
    summary.skipped.sort()
    summary.failed.sort()
    return rows


def _count(summary: Summary, key: str, family: str, computed: set[str]) -> None:
    (summary.new if key in computed else summary.reused)[family] += 1


@dataclass
class _Outcome:
    rows: dict[str, ManifestRow] = field(default_factory=dict)
    failures: list[JobResult] = field(default_factory=list)  # skipped inputs and failed stimuli


def _run_phase(
    jobs: list[Job], runner: Runner, journal: Journal, computed: set[str], label: str, progress: bool
) -> _Outcome:
    outcome = _Outcome()
    pending = []
    for job in jobs:
        row = journal.finished(job)
        if row is None:
            pending.append(job)
        else:
            outcome.rows[job.key] = row
    with tqdm(total=len(pending), desc=label, unit="clip", disable=not progress or not pending, file=sys.stderr) as bar:
        for result in runner.map_unordered(pending):
            bar.update(1)
            if result.status == "ok":
                if result.row is None:  # run_job gives every ok result its row
                    raise RuntimeError(f"{result.stimulus_id}: job ok but without a row")
                journal.add(result.key, result.row)
                outcome.rows[result.key] = row_from_dict(result.row)
                computed.add(result.key)
            else:
                outcome.failures.append(result)
    outcome.failures.sort(key=lambda r: (r.source, r.stimulus_id))
    return outcome
