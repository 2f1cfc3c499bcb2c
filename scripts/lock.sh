#!/usr/bin/env bash
# Refresh requirements.lock from pyproject.toml: every package that scripts/setup.sh installs,
# pinned to an exact version with sha256 hashes (pip-tools' pip-compile, run by the .venv's Python
# so that markers resolve for the Python jndlab runs on).
#
# Run it after any change to the dependencies in pyproject.toml (tests/test_lock.py fails until
# you do), then run ./test.sh: the changed lock reinstalls the .venv. Commit both files together.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PIP_TOOLS_VERSION=7.6.2
"$PY" -m piptools --version >/dev/null 2>&1 || "$PY" -m pip install -q "pip-tools==$PIP_TOOLS_VERSION"  # before the first set-up
# PIP_CONSTRAINT= and an empty --find-links: resolve against the package index alone, so that a
# machine's local wheel caches or caps never leak into the lock.
PIP_CONSTRAINT= PIP_FIND_LINKS= "$PY" -m piptools compile --quiet --all-extras --generate-hashes \
    --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
    --index-url https://pypi.org/simple --output-file requirements.lock pyproject.toml
echo "requirements.lock refreshed: $(grep -c '^[A-Za-z0-9]' requirements.lock) packages"
