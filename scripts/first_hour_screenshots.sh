#!/usr/bin/env bash
# docs/screenshots/: the window at 1400x900 and 1280x800 (scripts/first_hour_screenshots.py) on a virtual
# X display (Debian: apt-get install xvfb). Nothing is run: the demo model only loads (under a minute).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v xvfb-run >/dev/null || { echo "xvfb-run is missing: apt-get install -y xvfb" >&2; exit 1; }
HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=xcb exec xvfb-run -a -s "-screen 0 1600x1000x24" \
  .venv/bin/python scripts/first_hour_screenshots.py "${1:-docs/screenshots}"
