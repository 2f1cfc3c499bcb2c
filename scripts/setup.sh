#!/usr/bin/env bash
# Set up jndlab on a fresh Debian machine. Every step is skipped when already done.
#   1. Debian packages (ffmpeg, espeak-ng, pocketsphinx-testdata, chromium, ...)
#   2. a virtual environment in .venv with jndlab and its Python packages, exactly as pinned in
#      requirements.lock (refresh it with scripts/lock.sh)
#   3. the demo corpus in data/ (real speech + espeak-ng speech + synthetic noises)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '[setup] %s\n' "$*"; }

DEBIAN_PACKAGES=(python3 python3-venv python3-dev build-essential libsndfile1 ffmpeg espeak-ng
                 pocketsphinx-testdata chromium fonts-dejavu-core)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
    log "Debian packages present"
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "[setup] jndlab needs Python >= 3.11; $("$PYTHON" --version) found. Set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    log "creating virtual environment .venv"
    "$PYTHON" -m venv .venv
fi
# The stamp covers the lock and pyproject.toml: a changed pin or entry point reinstalls.
stamp=.venv/.jndlab-install-stamp
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python packages from requirements.lock (exact pins with hashes; a few minutes on first run)"
    # Every package, pip included, comes from the lock at an exact version with its hash;
    # jndlab itself goes in editable without dependencies and without a build environment
    # (setuptools is in the lock), so nothing unpinned is ever fetched.
    .venv/bin/python -m pip install -q --require-hashes --no-deps -r requirements.lock
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
    .venv/bin/python -m pip check >/dev/null \
        || { .venv/bin/python -m pip check >&2; echo "[setup] the installed packages conflict; refresh the lock with scripts/lock.sh" >&2; exit 1; }
    .venv/bin/python -c "import torch, torchaudio, soundfile" \
        || { echo "[setup] torch/torchaudio do not import; see the exact pair pinned in pyproject.toml and requirements.lock" >&2; exit 1; }
    echo "$want" > "$stamp"
else
    log "Python packages present (requirements.lock)"
fi

if [ ! -f data/.corpus-complete ]; then
    log "building the demo corpus in data/"
    .venv/bin/python -m perturbations demo-corpus --out data
else
    log "demo corpus present (data/)"
fi
