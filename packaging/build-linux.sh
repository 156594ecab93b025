#!/usr/bin/env bash
# Builds the Linux installer from the committed tree (HEAD):
#   bash packaging/build-linux.sh                      -> dist/Retake-<version>-linux-x86_64.run
#   bash packaging/build-linux.sh --offline-bundle DIR --backend cuda [--python-version 3.11]...
#                                                      -> DIR/Retake-<version>-linux-x86_64.run and
#                                                         DIR/wheels/: every wheel the lock's cuda extra
#                                                         needs, for `sh Retake-*.run --wheels DIR/wheels`
# The .run (makeself, a Debian package: apt-get install makeself) holds the Retake wheel, a uv binary
# (from uv's wheel on PyPI, the version pyproject.toml names), pyproject.toml + uv.lock, the launchers,
# menu entry and icon, and retake_install, which does the installing (packaging/README.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bundle="" backend="" python_versions=()
while [ $# -gt 0 ]; do
  case "$1" in
    --offline-bundle) bundle="$2"; shift 2 ;;
    --backend) backend="$2"; shift 2 ;;
    --python-version) python_versions+=("$2"); shift 2 ;;
    *) echo "build-linux.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -n "$bundle" ] && [ -z "$backend" ]; then
  echo "build-linux.sh: --offline-bundle needs --backend (cuda or cpu: the wheels differ)" >&2; exit 2
fi
command -v makeself >/dev/null || { echo "build-linux.sh: makeself is missing: apt-get install -y makeself" >&2; exit 1; }
python="${PYTHON:-python3}"
read -r version uv_version < <("$python" -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb"))
print(t["project"]["version"], t["tool"]["uv"]["required-version"].lstrip("="))')
[ ${#python_versions[@]} -gt 0 ] || python_versions=("$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')")
if ! git diff --quiet HEAD -- . ':!dist' ':!packaging/test-linux.log' ':!packaging/test-linux-window.png'; then
  echo "build-linux.sh: note: uncommitted changes are not in the installer (it is built from $(git rev-parse --short HEAD))" >&2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/retake-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git archive HEAD | tar -x -C "$work/src"

# uv for this build and for the payload: the manylinux x86_64 wheel of the pinned version.
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
  --platform manylinux_2_17_x86_64 --python-version 3.11 --dest "$work/uv-wheel" "uv==$uv_version"
"$python" -m zipfile -e "$work"/uv-wheel/uv-*.whl "$work/uv-wheel/x"
uv="$work/uv"
cp "$work"/uv-wheel/x/uv-*.data/scripts/uv "$uv"
chmod +x "$uv"

"$uv" build --quiet --wheel --out-dir "$work/wheel" "$work/src"
PYTHONPATH="$work/src/packaging" "$python" -m retake_install assemble --root "$work/src" --out "$work/payload" \
  --wheel "$work"/wheel/retake-*.whl --uv "$uv"

out="${bundle:-dist}"
mkdir -p "$out"
run="$out/Retake-$version-linux-x86_64.run"
# makeself's header answers --help itself and refuses flags it does not know, so `sh Retake-*.run
# --prefix DIR` would fail: its copy here drops those two branches (and says so if they changed), and
# every other argument goes to install.sh; makeself's own --check, --list, --target DIR still work.
"$python" - "${MAKESELF_HEADER:-/usr/share/makeself/makeself-header.sh}" "$work/header.sh" <<'PY'
import sys
header = open(sys.argv[1]).read()
for branch in ('    -h | --help)\n\tMS_Help\n\texit 0\n\t;;\n',
               '    -*)\n\techo Unrecognized flag : "\\$1" >&2\n\tMS_Help\n\texit 1\n\t;;\n'):
    if header.count(branch) != 1:
        sys.exit(f"build-linux.sh: makeself's header changed; its option branch {branch.split(')')[0].strip()} not found")
    header = header.replace(branch, "")
open(sys.argv[2], "w").write(header)
PY
makeself --quiet --noprogress --sha256 --header "$work/header.sh" "$work/payload" "$run" "Retake $version" ./install.sh
echo "build-linux.sh: $run ($(du -h "$run" | cut -f1), from $(git rev-parse --short HEAD))"

if [ -n "$bundle" ]; then
  # The wheels of the lock's $backend extra, checked against the lock's hashes as they are downloaded.
  "$uv" export --quiet --frozen --project "$work/src" --extra "$backend" --no-emit-project \
    --format requirements-txt --output-file "$work/requirements.txt"
  # pip takes only the platform tags it is given: every manylinux level from PySide6's (glibc 2.34) down
  platforms=()
  for glibc in $(seq 34 -1 5); do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
  platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
  for python_version in "${python_versions[@]}"; do
    "$python" -m pip download --quiet --disable-pip-version-check --require-hashes --no-deps --only-binary :all: \
      "${platforms[@]}" --python-version "$python_version" --implementation cp \
      --dest "$bundle/wheels" -r "$work/requirements.txt"
  done
  cat > "$bundle/README.txt" <<EOF
Retake $version for Linux x86_64, offline: the installer and every wheel its lock's $backend choice needs
(for Python ${python_versions[*]}). On the workstation, with this folder copied there:

    sh Retake-$version-linux-x86_64.run --backend $backend --wheels wheels

Nothing is downloaded; each wheel is checked against the hash the lock records.
EOF
  echo "build-linux.sh: $bundle/wheels: $(ls "$bundle/wheels" | wc -l) wheels, $(du -sh "$bundle/wheels" | cut -f1)"
fi
