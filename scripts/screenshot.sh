#!/usr/bin/env bash
# Take docs/screenshot.png from a real Retake window on a virtual X display (Debian: apt-get install
# xvfb). The window edits the demo-world house scene with the demo model on the CPU (about a minute).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v xvfb-run >/dev/null || { echo "xvfb-run is missing: apt-get install -y xvfb" >&2; exit 1; }
HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=xcb exec xvfb-run -a -s "-screen 0 1600x1000x24" \
  .venv/bin/python scripts/screenshot.py "${1:-docs/screenshot.png}"
