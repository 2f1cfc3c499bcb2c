#!/usr/bin/env bash
# Set up jndlab on a fresh Debian machine. Every step is skipped when already done.
#   1. Debian packages (ffmpeg, espeak-ng, pocketsphinx-testdata, chromium, ...)
#   2. a virtual environment in .venv with jndlab and its Python packages
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
stamp=.venv/.jndlab-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing Python packages (torch + torchaudio 2.11 pair; a few minutes on first run)"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[dev]"
    .venv/bin/python -c "import torch, torchaudio, soundfile" \
        || { echo "[setup] torch/torchaudio do not import; see pyproject.toml pins" >&2; exit 1; }
    echo "$want" > "$stamp"
else
    log "Python packages present"
fi

if [ ! -f data/.corpus-complete ]; then
    log "building the demo corpus in data/"
    .venv/bin/python -m perturbations demo-corpus --out data
else
    log "demo corpus present (data/)"
fi
