#!/usr/bin/env bash
# The Linux installer end to end, as a new user would meet it (run as root: it creates that user and
# installs the system packages the installer names). Builds the .run, checks that it names the
# missing Qt libraries and that its apt-get line installs them, installs as the new user into a fresh
# HOME and the default prefix (online: uv from PyPI), runs `retake self-test` and a CLI edit of a
# demo scene, opens the window under Xvfb and takes a screenshot, installs a second build over it
# (offline, from build-linux.sh --offline-bundle), uninstalls, and checks that only the user's data is
# left. Writes packaging/test-linux.log and packaging/test-linux-window.png.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log="$root/packaging/test-linux.log"
shot="$root/packaging/test-linux-window.png"
user=retake-test
work=/tmp/retake-installer-test
home="$work/home"
display=:77
exec > >(tee "$log") 2>&1

started=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - started )) s] $*"; }
fail() { echo "FAIL: $*"; exit 1; }
as_user() {
  runuser -u "$user" -- env -i HOME="$home" USER="$user" LANG=C.UTF-8 \
    PATH="$home/.local/bin:/usr/local/bin:/usr/bin:/bin" "$@"
}
user_data_digest() {  # settings, presets, models, projects: what no install may change
  (cd "$home" && find .config/Retake .local/share/Retake house.retake -type f -print0 | sort -z |
    xargs -0 sha256sum)
}

[ "$(id -u)" = 0 ] || fail "run as root: it creates a user and installs the system packages the installer names"
for tool in makeself xvfb-run; do
  command -v "$tool" >/dev/null || { apt-get update -qq; apt-get install -y -qq makeself xvfb >/dev/null; }
done
echo "machine: $(. /etc/os-release && echo "$PRETTY_NAME"), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

step "build the installer"
rm -rf dist
t=$(date +%s)
bash packaging/build-linux.sh
run=$(ls dist/Retake-*-linux-x86_64.run)
run_size=$(stat -c %s "$run")
echo "built $run: $run_size bytes in $(( $(date +%s) - t )) s"

step "a new user with a fresh home"
userdel -r "$user" >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
chmod 755 "$work"
useradd --create-home --home-dir "$home" --shell /bin/bash "$user"
cp "$run" "$work/"
chmod 644 "$work/$(basename "$run")"
run="$work/$(basename "$run")"
before=$(cd "$home" && find . | sort)
echo "home: $home ($(echo "$before" | wc -l) entries from /etc/skel)"

step "the system check names what Qt lacks, and its apt-get line installs it"
set +e
check=$(as_user sh "$run" --yes --no-self-test 2>&1)
rc=$?
set -e
echo "$check" | grep -v "^Verifying\|^Uncompressing"
if [ $rc -eq 3 ]; then
  line=$(echo "$check" | grep -o "sudo apt-get install .*" | sed 's/^sudo //')
  [ -n "$line" ] || fail "the system check gave no apt-get line"
  [ ! -e "$home/.local/opt" ] || fail "the stopped install left $home/.local/opt"
  echo "running: $line -y"
  $line -y -qq >/dev/null
elif [ $rc -eq 0 ]; then  # it went on to install: this machine had every library already
  echo "this machine already has every library Qt needs, so the check had nothing to name and the install ran"
  as_user "$home/.local/bin/retake-uninstall" --yes
else
  fail "the installer exited $rc before installing"
fi

step "install as $user (default prefix, backend auto, wheels from PyPI)"
t=$(date +%s)
as_user sh "$run" --yes
install_s=$(( $(date +%s) - t ))
prefix="$home/.local/opt/retake"
version=$(cat "$prefix/current")
for path in "$prefix/bin/retake" "$prefix/bin/retake-uninstall" "$home/.local/bin/retake" \
            "$home/.local/bin/retake-uninstall" "$home/.local/share/applications/retake.desktop" \
            "$home/.local/share/icons/hicolor/256x256/apps/retake.png"; do
  [ -e "$path" ] || fail "$path is missing"
done
grep -q "^Exec=\"$prefix/bin/retake\" open %f" "$home/.local/share/applications/retake.desktop" || fail "menu entry's Exec"
[ "$(stat -c %U "$prefix/versions/$version")" = "$user" ] || fail "the runtime is not the user's"
echo "installed $version in $install_s s; runtime $(du -sh --apparent-size "$prefix/versions/$version" | cut -f1)," \
     "with uv's cache $(du -sh "$prefix" | cut -f1) on disk"
cat "$prefix/versions/$version/install.json"

step "retake self-test (through ~/.local/bin/retake)"
as_user env QT_QPA_PLATFORM=offscreen retake self-test

step "a CLI edit of the demo-world house"
install -o "$user" -m 644 resources/demo_world/house.png "$home/house.png"
t=$(date +%s)
as_user retake edit "$home/house.png" --model demo \
  --source "a red house in a meadow under a blue sky" --target "a blue house in a meadow under a blue sky" \
  --param inversion=direct --project "$home/house.retake" --out "$home/house-blue.png"
[ -s "$home/house-blue.png" ] || fail "no edited picture"
echo "edited in $(( $(date +%s) - t )) s: $home/house-blue.png"

step "the user's data: a preset, an imported model, the project"
as_user env QT_QPA_PLATFORM=offscreen "$prefix/versions/$version/venv/bin/python" -c '
from gui.app import make_app
from gui.settings import AppSettings
make_app()
settings = AppSettings()
settings.save_preset("p2p", "soft colour", {"steps": 30, "inversion": "direct"})
settings.models_dir().mkdir(parents=True, exist_ok=True)
(settings.models_dir() / "my-model.safetensors").write_bytes(b"stands for an imported checkpoint")
settings.store.sync()'

step "the window under Xvfb (first start: the welcome view)"
Xvfb "$display" -screen 0 1400x900x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
sleep 2
as_user env DISPLAY="$display" retake > "$work/window.log" 2>&1 &
app=$!
sleep 25  # the window shows within a second; the engine (torch) loads behind it
kill -0 "$app" 2>/dev/null || { cat "$work/window.log"; fail "the window closed"; }
as_user env DISPLAY="$display" "$prefix/versions/$version/venv/bin/python" -c '
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication([])
sys.exit(0 if app.primaryScreen().grabWindow(0).save(sys.argv[1]) else 1)' "$home/window.png" ||
  { kill "$app" "$xvfb"; fail "no screenshot"; }
kill "$app" "$xvfb" 2>/dev/null || true
wait "$app" "$xvfb" 2>/dev/null || true
cp "$home/window.png" "$shot"
rm "$home/window.png"
grep -v "propagateSizeHints" "$work/window.log" || true
echo "screenshot: $shot"

step "a second build, installed over the first offline from a wheel bundle"
data=$(user_data_digest)
echo "$data"
rm -rf "$work/bundle"
t=$(date +%s)
bash packaging/build-linux.sh --offline-bundle "$work/bundle" --backend cpu
chmod -R a+rX "$work/bundle"
echo "bundle made in $(( $(date +%s) - t )) s"
t=$(date +%s)
as_user sh "$work/bundle/$(basename "$run")" --yes --backend cpu --wheels "$work/bundle/wheels"
upgrade_s=$(( $(date +%s) - t ))
second=$(cat "$prefix/current")
[ "$second" != "$version" ] || fail "the second install did not switch versions"
[ "$(ls "$prefix/versions")" = "$second" ] || fail "versions left: $(ls "$prefix/versions")"
[ "$(user_data_digest)" = "$data" ] || fail "the upgrade changed the user's data"
echo "upgraded $version -> $second in $upgrade_s s; the user's data is byte for byte the same"
as_user retake methods | head -n 1

step "uninstall"
as_user retake-uninstall --yes
for path in "$prefix" "$home/.local/bin/retake" "$home/.local/bin/retake-uninstall" \
            "$home/.local/share/applications/retake.desktop" "$home/.local/share/icons/hicolor"; do
  [ ! -e "$path" ] || fail "$path is still there"
done
[ "$(user_data_digest)" = "$data" ] || fail "uninstall changed the user's data"
after=$(cd "$home" && find . | sort)
left=$(comm -13 <(echo "$before") <(echo "$after"))
echo "what the session left in the home (besides /etc/skel's files):"
echo "$left" | sed 's/^/  /'
unexpected=$(echo "$left" | grep -v -E '^\./(\.config|\.local|\.local/share|\.cache)$|^\./\.config/Retake|^\./\.local/share/Retake|^\./\.cache/retake|^\./house(\.png|-blue\.png|\.retake)' || true)
[ -z "$unexpected" ] || fail "left behind, not user data: $unexpected"
echo "only user data is left: settings and presets, the imported model, Retake's cache, the photo, its project and result"

step "clean up"
userdel -r "$user" >/dev/null 2>&1 || true
rm -rf "$work"
echo
echo "PASSED: installer $run_size bytes;" \
     "install $install_s s (online), upgrade $upgrade_s s (offline bundle); total $(( $(date +%s) - started )) s"
