#!/usr/bin/env bash
# Retake's main job on the bundled demo photo: invert it, edit it, keep the project.
# Until the desktop app lands, this is a CLI edit. Extra arguments go to `main.py edit`.
# The demo model was trained on small pictures: it works at 256 px (and is quick on a CPU there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup-venv.sh"
cd "$root"
mkdir -p out
exec .venv/bin/python main.py edit resources/demo/house.png \
  --source "a house in a meadow under a blue sky" \
  --target "a castle in a meadow under a blue sky" \
  --project out/house.retake --out out/house-castle.png --max-side 256 "$@"
