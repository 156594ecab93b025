#!/usr/bin/env bash
# Open the desktop app on the bundled demo photo (its project, out/house.retake, is made on the first edit).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup-venv.sh"
cd "$root"
mkdir -p out
[ -f out/house.png ] || cp resources/demo/house.png out/house.png
exec .venv/bin/python main.py open out/house.png
