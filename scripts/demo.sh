#!/usr/bin/env bash
# Retake's main job on a demo-world scene: invert it, edit it, keep the project (a CLI edit; extra
# arguments go to `main.py edit`). The demo model (`--model demo`, resources/demo_world/weights) was
# trained on such 128-px scenes, so its edits visibly work; direct inversion makes the whole job take
# seconds on a CPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup-venv.sh"
cd "$root"
mkdir -p out
exec .venv/bin/python main.py edit resources/demo_world/house.png --model demo \
  --source "a red house in a meadow under a blue sky" \
  --target "a blue house in a meadow under a blue sky" \
  --param inversion=direct --project out/house.retake --out out/house-blue.png "$@"
