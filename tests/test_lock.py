"""requirements.lock and pyproject.toml agree, so that set-up installs what jndlab declares.

scripts/setup.sh installs the lock only (exact pins with hashes), then jndlab itself without
dependencies. A package added to pyproject.toml but not to the lock would be missing on a fresh
machine; one removed from pyproject.toml would linger in every set-up. Refresh with scripts/lock.sh.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
REFRESH = "run scripts/lock.sh and commit requirements.lock"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _declared() -> dict[str, list[Requirement]]:
    """Direct requirements, by extra ('' for the core ones)."""
    project = _pyproject()["project"]
    groups = {"": [Requirement(r) for r in project["dependencies"]]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        groups[extra] = [Requirement(r) for r in reqs]
    return groups


def _lock_pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def _lock_direct() -> set[str]:
    """Packages the lock says come straight from pyproject.toml (pip-compile's `# via` notes)."""
    direct, current = set(), None
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if match:
            current = canonicalize_name(match.group(1))
        elif current and "jndlab (pyproject.toml)" in line:
            direct.add(current)
    return direct


def test_lock_exists_with_hashes_for_every_pin():
    assert LOCK.is_file(), f"{LOCK.name} is missing: {REFRESH}"
    text = LOCK.read_text()
    pins = _lock_pins()
    assert pins, f"{LOCK.name} pins nothing"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    unhashed = [b.split("==")[0] for b in blocks if "==" in b.split("\n")[0] and "--hash=sha256:" not in b]
    assert not unhashed, f"{LOCK.name}: pins without hashes: {unhashed}; {REFRESH}"
    assert "@ file:" not in text, f"{LOCK.name} refers to a local path; {REFRESH}"


def test_lock_covers_every_extra():
    header = LOCK.read_text().split("\n\n", 1)[0]
    extras = set(_pyproject()["project"].get("optional-dependencies", {}))
    if "--all-extras" not in header:
        named = set(re.findall(r"--extra[= ](\S+)", header))
        missing = extras - named
        assert not missing, f"{LOCK.name} was compiled without the extras {sorted(missing)}; {REFRESH}"


def test_every_declared_requirement_is_pinned_within_its_range():
    pins = _lock_pins()
    problems = []
    for extra, reqs in _declared().items():
        where = f"[{extra}]" if extra else "dependencies"
        for req in reqs:
            if canonicalize_name(req.name) == "jndlab":
                continue
            pin = pins.get(canonicalize_name(req.name))
            if pin is None:
                problems.append(f"{req.name} ({where}) is not in {LOCK.name}")
            elif req.specifier and not req.specifier.contains(pin, prereleases=True):
                problems.append(f"{req.name} ({where}) wants {req.specifier}, {LOCK.name} pins {pin}")
    assert not problems, "; ".join(problems) + f"; {REFRESH}"


def test_lock_has_no_direct_requirement_that_pyproject_dropped():
    declared = {canonicalize_name(r.name) for reqs in _declared().values() for r in reqs}
    stale = _lock_direct() - declared
    assert not stale, (
        f"{LOCK.name} still lists {sorted(stale)} as coming from pyproject.toml, "
        f"which no longer declares them; {REFRESH}"
    )


def test_torch_and_torchaudio_are_an_exact_pair():
    # torchaudio 2.11.1 does not load against torch 2.11.0 (undefined symbol): pin both exactly.
    core = {canonicalize_name(r.name): r for r in _declared()[""]}
    for name in ("torch", "torchaudio"):
        spec = list(core[name].specifier)
        assert len(spec) == 1 and spec[0].operator == "==" and "*" not in spec[0].version, (
            f"pyproject.toml must pin {name} exactly (==X.Y.Z), not {core[name].specifier}"
        )
    pins = _lock_pins()
    assert pins["torch"] == Version(list(core["torch"].specifier)[0].version)
    assert pins["torchaudio"] == Version(list(core["torchaudio"].specifier)[0].version)


def test_setup_installs_from_the_lock_and_stamps_it():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--require-hashes" in setup and "requirements.lock" in setup
    stamp_line = next(line for line in setup.splitlines() if line.startswith("want="))
    assert "requirements.lock" in stamp_line and "pyproject.toml" in stamp_line
