#!/bin/sh
# Retake's launcher, written by its installer (retake-uninstall removes it): runs the version that
# <prefix>/current names, so an upgrade switches every launcher and menu entry at once.
prefix=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
version=$(cat "$prefix/current" 2>/dev/null || true)
venv="$prefix/versions/$version/venv"
if [ -z "$version" ] || ! "$venv/bin/python" -c "" 2>/dev/null; then
  echo "retake: the program in $prefix is missing or broken (was the Python it was built on removed?)." >&2
  echo "Run the Retake installer again: your settings, models and projects are kept." >&2
  exit 1
fi
exec "$venv/bin/retake" "$@"
