#!/bin/sh
# Retake.app's executable (Contents/MacOS/Retake; UNTESTED, see packaging/README.md). On the first start,
# or when this app carries a newer Retake than the one installed, it builds the runtime from the app's
# payload with retake_install (the installer logic Linux and Windows share) into
# ~/Library/Application Support/Retake/runtime; then it runs it. `--uninstall` removes that runtime.
set -eu
contents=$(cd "$(dirname "$0")/.." && pwd)
payload="$contents/Resources/payload"
prefix="$HOME/Library/Application Support/Retake/runtime"
log="$HOME/Library/Logs/Retake/install.log"
uv="$payload/bin/uv"
export UV_CACHE_DIR="$prefix/cache/uv-bootstrap" UV_NO_CONFIG=1 UV_SYSTEM_CERTS=1
wheel=$(basename "$payload"/wheels/retake-*.whl)
want=$(echo "$wheel" | cut -d- -f2)
current() { cat "$prefix/current" 2>/dev/null || true; }
installed() { grep -o '"version": "[^"]*"' "$prefix/versions/$(current)/install.json" 2>/dev/null | cut -d'"' -f4; }
find_python() {
  UV_PYTHON_DOWNLOADS=never "$uv" python find --no-project '>=3.11' 2>/dev/null ||
    { "$uv" python install 3.12 >&2 && "$uv" python find --no-project --managed-python '>=3.11'; }
}
if [ "${1:-}" = "--uninstall" ]; then
  PYTHONPATH="$payload" exec "$(find_python)" -m retake_install uninstall --yes --prefix "$prefix"
fi
if [ "$(installed)" != "$want" ]; then
  mkdir -p "$(dirname "$log")"
  osascript -e 'display notification "Setting up Retake: the first start takes a few minutes." with title "Retake"' || true
  python=$(find_python)
  if ! PYTHONPATH="$payload" "$python" -m retake_install install --yes --prefix "$prefix" --backend cpu \
      --python "$python" > "$log" 2>&1; then
    osascript -e "display alert \"Retake could not be set up\" message \"Nothing of an earlier version was changed. See $log.\"" || true
    exit 1
  fi
fi
exec "$prefix/versions/$(current)/venv/bin/retake" "$@"
