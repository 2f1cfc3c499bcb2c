"""The layers of ARCHITECTURE.md, checked: imports point down the data flow, never into
another module's private names, and the read side (analysis, model) runs without Flask.

perturbations  <-  listening_test  <-  analysis  <-  model  <-  se
(benchmarks/, scripts/, tools/ and tests/ sit on top and may import anything.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("perturbations", "listening_test", "analysis", "model", "se")
RANK = {name: i for i, name in enumerate(LAYERS)}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _imports(module: str, path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names imported from it) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target, [alias.name for alias in node.names]))
    return out


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _top(name: str) -> str:
    return name.split(".")[0]


def test_every_import_points_down_the_data_flow():
    upward = []
    for module, path in _modules():
        mine = RANK[_top(module)]
        for line, target, _names in _imports(module, path):
            if _top(target) in RANK and RANK[_top(target)] > mine:
                upward.append(f"{_where(path)}:{line}: {_top(module)} imports {target}")
    assert not upward, "imports that point up the data flow (see ARCHITECTURE.md):\n" + "\n".join(upward)


def _is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _private_imports(module: str, path: Path) -> list[str]:
    """Imports of a private name (``_x``) of another module. A package may keep private
    modules (``procedures/_checks.py``) for its own modules: importing those from inside
    that package is allowed, from anywhere else it is not."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for line, target, names in _imports(module, path):
        if _top(target) not in RANK:
            continue
        parts = target.split(".")
        for i, part in enumerate(parts):
            if _is_private(part) and ".".join(parts[:i]) != package:
                found.append(f"{_where(path)}:{line}: imports private module {target}")
                break
        for name in names:
            if _is_private(name) and target != package:
                found.append(f"{_where(path)}:{line}: imports private {target}.{name}")
    return found


def test_no_import_reaches_into_another_modules_private_names():
    private = [hit for module, path in _modules() for hit in _private_imports(module, path)]
    assert not private, (
        "imports of private names (make them public in their home, or stop needing them):\n" + "\n".join(private)
    )


def test_the_checker_sees_an_upward_and_a_private_import(tmp_path):
    """The two checks above can fail: a planted upward import and a private import are found."""
    bad = tmp_path / "perturbations" / "bad.py"
    bad.parent.mkdir()
    bad.write_text(
        "from model.network import DPAMMetric\nfrom .audio import _format_of\n"
        "from listening_test.procedures._checks import integer\nfrom . import _own\n"
    )
    found = _imports("perturbations.bad", bad)
    assert (1, "model.network", ["DPAMMetric"]) in found
    assert RANK[_top("model.network")] > RANK["perturbations"]
    hits = _private_imports("perturbations.bad", bad)
    assert [h.split(": ", 1)[1] for h in hits] == [
        "imports private perturbations.audio._format_of",
        "imports private module listening_test.procedures._checks",
    ]
    inside = tmp_path / "listening_test" / "procedures" / "staircase.py"
    inside.parent.mkdir(parents=True)
    inside.write_text("from . import _checks\nfrom ._checks import integer\n")
    assert _private_imports("listening_test.procedures.staircase", inside) == []


READ_SIDE = [m for m, _ in _modules() if _top(m) in ("analysis", "model") and not m.endswith("__main__")]


@pytest.mark.parametrize("package", ["analysis", "model"])
def test_the_read_side_imports_without_flask(package):
    """analysis and model read the database through the Flask-free query layer: importing
    every one of their modules loads neither flask nor flask_sqlalchemy."""
    modules = [m for m in READ_SIDE if _top(m) == package]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n    importlib.import_module(m)\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('flask', 'flask_sqlalchemy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", f"{package} pulls in Flask: {done.stdout.strip()[-500:]}"
