#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs Retake with the given extras, only when pyproject.toml
# changed since the last install: safe to run again and again. Sourced by demo.sh and test.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
venv="$root/.venv"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
stamp="$venv/.retake-install-$(sha256sum "$root/pyproject.toml" | cut -c1-16)${extras:+-$extras}"
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # torch and torchvision are pinned in pyproject.toml as one build pair (PyPI's Linux wheels are the
  # CUDA builds, several GB; they also run on a CPU).
  "$venv/bin/python" -m pip install --quiet -e "$root${extras:+[$extras]}"
  touch "$stamp"
fi
