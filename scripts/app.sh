#!/usr/bin/env bash
# Open the desktop app on a demo-world scene (out/house.png, a copy of resources/demo_world/house.png) with
# the demo model (the default), its caption as the source prompt and a target whose edit shows: press Run.
# Its project is out/house.retake, the one scripts/demo.sh makes for the same picture; a project that
# already has prompts keeps its own.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup-venv.sh"
cd "$root"
mkdir -p out
cmp -s resources/demo_world/house.png out/house.png || cp resources/demo_world/house.png out/house.png
exec .venv/bin/python main.py open out/house.png \
  --source "a red house in a meadow under a blue sky" \
  --target "a blue house in a meadow under a blue sky"
