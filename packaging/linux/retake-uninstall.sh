#!/bin/sh
# Removes Retake (retake-uninstall [--yes] [--purge]); written by its installer. The uninstaller is the
# installer's own Python package, which the Retake wheel carries into the runtime.
prefix=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
version=$(cat "$prefix/current" 2>/dev/null || true)
venv="$prefix/versions/$version/venv"
python="$venv/bin/python"
if ! "$python" -c "import retake_install" 2>/dev/null; then  # a broken runtime: any Python 3.11+ will do
  python=python3
  export PYTHONPATH="$(ls -d "$venv"/lib/python3*/site-packages 2>/dev/null | head -n1)"
fi
exec "$python" -m retake_install uninstall --prefix "$prefix" "$@"
