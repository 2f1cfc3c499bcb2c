#!/usr/bin/env bash
# Style and types, as CI checks them: ruff (lint + format) and mypy, configured in
# pyproject.toml. Run after scripts/setup.sh. `scripts/lint.sh --fix` applies ruff's
# safe fixes and formats the tree first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fix" ]]; then
    .venv/bin/ruff check --fix .
    .venv/bin/ruff format .
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
