#!/usr/bin/env bash
# Installs the test needs and runs the whole test suite (CPU, offscreen Qt, no network).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup-venv.sh" test
cd "$root"
export QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
