#!/usr/bin/env bash
# Builds dist/Retake-<version>-macos-arm64.dmg from the committed tree (HEAD). UNTESTED: needs a Mac
# (arm64) with git, Python 3.11+, sips, iconutil and hdiutil; packaging/README.md lists what to check.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
read -r version uv_version < <(python3 -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb"))
print(t["project"]["version"], t["tool"]["uv"]["required-version"].lstrip("="))')
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git archive HEAD | tar -x -C "$work/src"
python3 -m pip download --quiet --no-deps --only-binary :all: --platform macosx_11_0_arm64 --python-version 3.11 \
  --dest "$work/uv-wheel" "uv==$uv_version"
python3 -m zipfile -e "$work"/uv-wheel/uv-*.whl "$work/uv-wheel/x"
cp "$work"/uv-wheel/x/uv-*.data/scripts/uv "$work/uv"
chmod +x "$work/uv"
"$work/uv" build --quiet --wheel --out-dir "$work/wheel" "$work/src"
app="$work/dmg/Retake.app"
mkdir -p "$app/Contents/MacOS" "$app/Contents/Resources"
PYTHONPATH="$work/src/packaging" python3 -m retake_install assemble --root "$work/src" \
  --out "$app/Contents/Resources/payload" --wheel "$work"/wheel/retake-*.whl --uv "$work/uv"
sed "s/@VERSION@/$version/g" packaging/macos/Info.plist > "$app/Contents/Info.plist"
cp packaging/macos/Retake.sh "$app/Contents/MacOS/Retake"
chmod +x "$app/Contents/MacOS/Retake"
mkdir "$work/retake.iconset"
for size in 16 32 128 256; do
  sips -z $size $size packaging/icons/retake.png --out "$work/retake.iconset/icon_${size}x${size}.png" >/dev/null
done
iconutil -c icns "$work/retake.iconset" -o "$app/Contents/Resources/retake.icns"
ln -s /Applications "$work/dmg/Applications"
mkdir -p dist
hdiutil create -volname "Retake $version" -srcfolder "$work/dmg" -ov -format UDZO "dist/Retake-$version-macos-arm64.dmg"
