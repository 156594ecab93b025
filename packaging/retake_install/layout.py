"""Where an install puts things, and where the user's own data lives (which no install touches).

    <prefix>/                        ~/.local/opt/retake for one user, /opt/retake for root
      current                        the name of the version in use: one line, replaced atomically
      versions/<version>-<stamp>/    one complete runtime each: venv/, install.json
      bin/retake, bin/retake-uninstall
      cache/uv/                      uv's cache: a reinstall or upgrade reuses its wheels
      install-manifest.json          every path the install added, for retake-uninstall
    ~/.local/bin/retake, retake-uninstall            links (per-user installs; /usr/local/bin for root)
    ~/.local/share/applications/retake.desktop       the menu entry (/usr/local/share/... for root)
    ~/.local/share/icons/hicolor/{256x256,scalable}/apps/retake.{png,svg}

The user's data is elsewhere and survives upgrades and a plain uninstall: settings and presets in
$XDG_CONFIG_HOME/Retake (Qt's QSettings), imported models in $XDG_DATA_HOME/Retake (Qt's
AppDataLocation), Retake's cache in $XDG_CACHE_HOME/retake, projects wherever the user saved them.
`retake-uninstall --purge` removes the first three; projects and the Hugging Face cache (shared
with other programs) are never removed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

APP = "retake"


@dataclass(frozen=True)
class Layout:
    """The paths of one install (`system`: by root, outside root's home, for every user)."""

    prefix: Path
    home: Path
    system: bool
    env: Mapping[str, str]

    @classmethod
    def for_user(cls, prefix: Path | None = None, env: Mapping[str, str] | None = None) -> Layout:
        env = dict(os.environ if env is None else env)
        home = Path(env.get("HOME") or Path.home())
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        if prefix is None:
            prefix = Path("/opt") / APP if root else home / ".local" / "opt" / APP
        prefix = Path(prefix).expanduser().absolute()
        # root installing into its own home is one user's install, like anyone's
        return cls(prefix, home, root and home not in prefix.parents, env)

    # -- inside the prefix -----------------------------------------------------------------------
    @property
    def versions(self) -> Path:
        return self.prefix / "versions"

    @property
    def current_file(self) -> Path:
        return self.prefix / "current"

    @property
    def bin(self) -> Path:
        return self.prefix / "bin"

    @property
    def uv_cache(self) -> Path:
        return self.prefix / "cache" / "uv"

    @property
    def manifest(self) -> Path:
        return self.prefix / "install-manifest.json"

    @property
    def lock(self) -> Path:
        return self.prefix / ".install-lock"

    def current(self) -> str | None:
        """The version folder in use, or None (not installed, or a pointer to nothing)."""
        try:
            name = self.current_file.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return name if name and (self.versions / name).is_dir() else None

    def venv_python(self, version: str) -> Path:
        folder = self.versions / version / "venv"
        return folder / "Scripts" / "python.exe" if sys.platform == "win32" else folder / "bin" / "python"

    def venv_app(self, version: str) -> Path:
        folder = self.versions / version / "venv"
        return folder / "Scripts" / "retake.exe" if sys.platform == "win32" else folder / "bin" / "retake"

    # -- desktop integration (Linux) ---------------------------------------------------------------
    def _xdg(self, name: str, default: str) -> Path:
        return Path(self.env.get(name) or self.home / default)

    @property
    def links(self) -> Path:
        return Path("/usr/local/bin") if self.system else self.home / ".local" / "bin"

    @property
    def share(self) -> Path:
        return Path("/usr/local/share") if self.system else self._xdg("XDG_DATA_HOME", ".local/share")

    @property
    def desktop_entry(self) -> Path:
        return self.share / "applications" / f"{APP}.desktop"

    def icon(self, kind: str) -> Path:
        """`kind`: png (256x256) or svg (scalable)."""
        size = "256x256" if kind == "png" else "scalable"
        return self.share / "icons" / "hicolor" / size / "apps" / f"{APP}.{kind}"

    # -- the user's data (never touched but by --purge) ----------------------------------------------
    def user_data(self) -> dict[str, Path]:
        """What --purge removes, by what it holds."""
        return {
            "settings and presets": self._xdg("XDG_CONFIG_HOME", ".config") / "Retake",
            "imported models": self._xdg("XDG_DATA_HOME", ".local/share") / "Retake",
            "Retake's cache": Path(
                self.env.get("RETAKE_CACHE_DIR") or self._xdg("XDG_CACHE_HOME", ".cache") / APP),
        }

