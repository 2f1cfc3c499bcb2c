#!/usr/bin/env bash
# Set everything up, then run the test suite. Extra arguments go to pytest,
# e.g. ./test.sh -m "not slow" for the quick part only.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
