#!/usr/bin/env bash
# Set everything up, generate the demo stimulus set (skipped when done), then serve a
# ready listening test on it with the embedded SQLite database. Prints the participant
# and admin URLs. Extra arguments go to `python -m listening_test demo` (e.g. --port 8000).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
.venv/bin/python -m perturbations generate --input data/speech --output data/stimuli
exec .venv/bin/python -m listening_test demo --manifest data/stimuli/manifest.csv "$@"
