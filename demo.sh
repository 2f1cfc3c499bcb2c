#!/usr/bin/env bash
# Set everything up, then generate the demo stimulus set from the demo corpus.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python -m perturbations generate --input data/speech --output data/stimuli "$@"
