#!/usr/bin/env bash
# Makes .venv hold exactly what uv.lock says (the installers install from the same lock), with Retake
# itself editable: `setup-venv.sh` for the app, `setup-venv.sh test` for every extra the tests need.
# Run by demo.sh, app.sh and test.sh; safe to run again and again (a second run changes nothing and
# takes about a second). uv comes from PyPI into .tools/ at the version pyproject.toml names.
#
# The torch build is the backend extra the installers would choose on this machine
# (packaging/retake_install/backend.py; RETAKE_BACKEND=cuda|cpu overrides it). With `test`, every other
# extra of the lock comes too (the test tools, and any optional feature such as batch).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:-app}"
python="${PYTHON:-python3}"
cd "$root"
uv_version="$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["tool"]["uv"]["required-version"].lstrip("="))')"
uv="$root/.tools/uv-$uv_version/bin/uv"
if [ ! -x "$uv" ]; then
  "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$root/.tools/uv-$uv_version" "uv==$uv_version"
fi
backend="${RETAKE_BACKEND:-$(PYTHONPATH="$root/packaging" "$python" -m retake_install backend --lock uv.lock 2>/dev/null)}"
extras=(--extra "$backend")
if [ "$what" = test ]; then
  extras=(--all-extras)
  for other in $(PYTHONPATH="$root/packaging" "$python" -c 'from pathlib import Path
from retake_install.runtime import locked_backends
print(*locked_backends(Path("uv.lock")))'); do
    [ "$other" = "$backend" ] || extras+=(--no-extra "$other")
  done
fi
# --locked: install the lock as it is, and stop if pyproject.toml changed since (then run `uv lock`,
# packaging/README.md). UV_PYTHON_DOWNLOADS=never: the venv is built on this machine's Python.
UV_PYTHON_DOWNLOADS=never "$uv" sync --quiet --locked --python "$python" "${extras[@]}"
