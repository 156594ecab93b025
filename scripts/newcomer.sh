#!/usr/bin/env bash
# A scripted newcomer (issue 21's evidence): the real window on a virtual X display, driven with real
# mouse, wheel and keyboard events (xdotool) through the first hour's flows, a screenshot after each step.
#   bash scripts/newcomer.sh [OUT_DIR]     (default /tmp/newcomer-shots; a few minutes on a 2-core CPU)
# Prints PASS/FAIL and what was seen per step; exits 1 if a step failed or an exception escaped.
# Runs at 1280x800 (every flow), then at 1400x900 (start, a scene, the layout). A fresh temporary home
# folder each time: the settings, recent files and demo projects of a new user, nothing of yours.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$(realpath -m "${1:-/tmp/newcomer-shots}")"
for tool in xvfb-run xdotool; do
  command -v "$tool" >/dev/null || { echo "newcomer.sh needs xvfb-run and xdotool: apt-get install -y xvfb xdotool" >&2; exit 1; }
done
python="$root/.venv/bin/python"
[[ -x "$python" ]] || python=python3
scratch="$(mktemp -d -t retake-newcomer-XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
status=0
pass() {  # WIDTHxHEIGHT FOLDER [--quick]
  local size="$1" folder="$2"; shift 2
  local home="$scratch/home-$size"
  mkdir -p "$home/run" "$folder" && chmod 700 "$home/run"
  echo "== $size -> $folder"
  env -u QT_SCALE_FACTOR -u QT_SCREEN_SCALE_FACTORS HOME="$home" XDG_CONFIG_HOME="$home/.config" \
    XDG_DATA_HOME="$home/.local/share" XDG_CACHE_HOME="$home/.cache" XDG_RUNTIME_DIR="$home/run" \
    HF_HUB_OFFLINE=1 QT_QPA_PLATFORM=xcb \
    xvfb-run -a -s "-screen 0 ${size}x24 -nolisten tcp" "$python" scripts/newcomer.py "$folder" "$@" || status=1
}
rm -f "$out"/*.png "$out"/1400x900/*.png 2>/dev/null || true
pass 1280x800 "$out"
pass 1400x900 "$out/1400x900" --steps start,open-scene,chip,layout
exit $status
