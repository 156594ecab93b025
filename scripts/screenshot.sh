#!/usr/bin/env bash
# Screenshots of a real Retake window on a virtual X display (Debian: apt-get install xvfb).
#   bash scripts/screenshot.sh [OUT.png]        docs/screenshot.png: the window after the demo edit of the
#                                               demo-world house scene with the demo model (about a minute)
#   bash scripts/screenshot.sh first-hour [DIR] docs/screenshots/: the window at 1400x900 and 1280x800, the
#                                               welcome view's among them (scripts/first_hour_screenshots.py;
#                                               nothing is run)
#   bash scripts/screenshot.sh drafts [DIR]     docs/screenshots/: File > Open demo scene, a live draft and the
#                                               draft saved by Run (a run and a draft: minutes on a CPU)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command -v xvfb-run >/dev/null || { echo "xvfb-run is missing: apt-get install -y xvfb" >&2; exit 1; }
if [[ "${1:-}" == first-hour ]]; then
  set -- scripts/first_hour_screenshots.py "${2:-docs/screenshots}"
elif [[ "${1:-}" == drafts ]]; then
  set -- scripts/first_hour_screenshots.py "${2:-docs/screenshots}" --drafts
else
  set -- scripts/screenshot.py "${1:-docs/screenshot.png}"
fi
HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=xcb exec xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python "$@"
