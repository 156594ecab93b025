#!/bin/sh
# Entry of the Linux installer (makeself runs it in the folder it extracted the payload to): find a
# Python 3.11+, then hand over to retake_install, the installer logic all platforms share. Options:
# --prefix DIR, --yes, --backend auto|cuda|rocm|cpu, --wheels DIR, --skip-system-check (see --help).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
uv="$here/bin/uv"
# uv's cache in the extraction folder (finding a Python leaves nothing in the user's home); the
# system's certificates (a studio's TLS-inspecting proxy)
export UV_CACHE_DIR="$here/.uv-cache" UV_NO_CONFIG=1 UV_SYSTEM_CERTS=1
# A Python already on this machine first (works offline); uv looks on PATH and in its own installs.
python=$(UV_PYTHON_DOWNLOADS=never "$uv" python find --no-project '>=3.11' 2>/dev/null || true)
if [ -z "$python" ]; then
  echo "retake-install: no Python 3.11 or newer here; asking uv to download one (python-build-standalone)." >&2
  "$uv" python install 3.12 >&2 || {
    echo "retake-install: could not get a Python. Install one (sudo apt-get install python3, sudo dnf install" \
         "python3, sudo pacman -S python) and run this installer again." >&2
    exit 1
  }
  python=$("$uv" python find --no-project --managed-python '>=3.11')
fi
PYTHONPATH="$here" PYTHONDONTWRITEBYTECODE=1 exec "$python" -m retake_install install --python "$python" "$@"
