"""`python -m retake_install COMMAND`: what the installers, retake-uninstall and the build scripts run.

    install     [--prefix DIR] [--yes] [--backend auto|cuda|rocm|cpu] [--wheels DIR] ...
    uninstall   [--prefix DIR] [--yes] [--purge]
    backend     [--lock uv.lock] [--backend auto]      the backend this machine gets (scripts/setup-venv.sh)
    check-libs  [--platform xcb]                       the system libraries Qt lacks here, and the command
    derive-libs PYSIDE6_DIR                            the lists of system_libs.py, read off a PySide6
    assemble    --out DIR --wheel WHL --uv UV          an installer's payload (the build scripts)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from retake_install import backend, system_libs
from retake_install.install import Interrupted, Options, install, on_path, python_ok, refresh_desktop_caches
from retake_install.layout import Layout
from retake_install.runtime import InstallError, Payload, locked_backends
from retake_install.uninstall import plan, uninstall

HERE = Path(__file__).resolve().parent
EXIT_FAILED, EXIT_SYSTEM, EXIT_CANCELLED = 1, 3, 130


def say(message: str) -> None:
    print(f"retake-install: {message}", flush=True)


def ask(question: str, yes: bool, default: bool) -> bool:
    """The user's answer; `--yes` answers the default. No terminal and no --yes: an error."""
    if yes:
        return default
    if not sys.stdin.isatty():
        raise InstallError("there is no terminal to ask questions on: run again with --yes")
    answer = input(f"{question} [{'Y/n' if default else 'y/N'}] ").strip().lower()
    return default if not answer else answer.startswith("y")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.command(args) or 0)
    except InstallError as error:
        say(f"failed: {error}")
        return EXIT_FAILED
    except backend.BackendError as error:
        say(str(error))
        return EXIT_FAILED
    except (KeyboardInterrupt, Interrupted):
        say("interrupted: nothing was changed.")
        return EXIT_CANCELLED


def cmd_install(args: argparse.Namespace) -> int:
    started = time.monotonic()
    payload = Payload(Path(args.payload))
    layout = Layout.for_user(Path(args.prefix) if args.prefix else None)
    if sys.platform.startswith("linux") and not args.skip_system_check:
        if missing := system_libs.missing("xcb"):
            print(system_libs.explain(missing, system_libs.distro_family(), "Retake's window will not open"))
            if not ask("Install anyway (the window opens once they are installed)?", args.yes, default=False):
                say("stopped before changing anything (install the packages, or pass --skip-system-check).")
                return EXIT_SYSTEM
    if not python_ok(args.python):
        raise InstallError(f"{args.python} is not Python 3.11 or newer")
    choice = backend.choose(args.backend, backend.detect(), payload.locked_backends())
    say(f"backend: {choice.backend} ({choice.reason})")
    say(f"Retake {payload.version} goes into {layout.prefix}" + (f", wheels from {args.wheels}" if args.wheels else ""))
    if not ask("Install?", args.yes, default=True):
        return EXIT_CANCELLED
    wheels = Path(args.wheels).absolute() if args.wheels else None
    options = Options(choice.backend, args.python, wheels, integrate=sys.platform.startswith("linux"),
                      self_test=not args.no_self_test)
    name = install(payload, layout, options, say)
    if options.integrate:
        refresh_desktop_caches(layout)
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    command = "retake" if on_path(layout.links, os.environ) else str(layout.bin / "retake")
    say(f"Retake {payload.version} is installed ({name}, {minutes} min {seconds} s).\n"
        f"  Start it from the applications menu, or: {command}   (the CLI: {command} edit ..., {command} --help)\n"
        f"  Program files: {layout.prefix}\n"
        + (f"  Links: {layout.links}/retake, retake-uninstall"
           + ("" if on_path(layout.links, os.environ) else f" ({layout.links} is not on your PATH)") + "\n"
           f"  Menu entry: {layout.desktop_entry}\n" if options.integrate else "")
        + "  Your data (kept by upgrades and by retake-uninstall without --purge): "
        + "; ".join(f"{what} in {path}" for what, path in layout.user_data().items()))
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    layout = Layout.for_user(Path(args.prefix) if args.prefix else None)
    if not layout.manifest.exists() and layout.current() is None:
        say(f"Retake is not installed in {layout.prefix}.")
        return EXIT_FAILED
    paths = plan(layout, args.purge)
    print("This removes:\n" + "\n".join(f"  {path}" for path in paths), flush=True)
    if not ask("Remove Retake?", args.yes, default=True):
        return EXIT_CANCELLED
    uninstall(layout, args.purge, say)
    return 0


def cmd_backend(args: argparse.Namespace) -> int:
    choice = backend.choose(args.backend, backend.detect(), locked_backends(Path(args.lock)))
    print(choice.backend)
    print(choice.reason, file=sys.stderr)
    return 0


def cmd_check_libs(args: argparse.Namespace) -> int:
    if missing := system_libs.missing(args.platform):
        print(system_libs.explain(missing, system_libs.distro_family()))
        return EXIT_SYSTEM
    print(f"Every system library Qt needs for {args.platform} is here.")
    return 0


def cmd_derive_libs(args: argparse.Namespace) -> int:
    gui, window = system_libs.derive(Path(args.pyside6))
    print(f"GUI_LIBRARIES = {tuple(gui)!r}\nXCB_LIBRARIES = {tuple(window)!r}")
    unmapped = [name for name in gui + window if name not in system_libs.PACKAGES]
    if unmapped:
        print(f"no package known for {', '.join(unmapped)}: add them to system_libs.PACKAGES", file=sys.stderr)
    same = (tuple(gui), tuple(window)) == (system_libs.GUI_LIBRARIES, system_libs.XCB_LIBRARIES)
    if not same:
        print("system_libs.py's lists differ from this PySide6: paste the lines above into it", file=sys.stderr)
    return 0 if same and not unmapped else EXIT_FAILED


PAYLOAD_SHARE = {  # payload/share/NAME <- repository path
    "retake.sh": "packaging/linux/retake.sh",
    "retake-uninstall.sh": "packaging/linux/retake-uninstall.sh",
    "retake.desktop": "packaging/linux/retake.desktop",
    "retake.png": "packaging/icons/retake.png",
    "retake.svg": "packaging/icons/retake.svg",
}


def cmd_assemble(args: argparse.Namespace) -> int:
    """An installer's payload: this package, uv, the lock, the wheel, the desktop files, the entry script."""
    root, out = Path(args.root), Path(args.out)
    if out.exists():
        raise InstallError(f"{out} exists; the payload is made in a new folder")
    shutil.copytree(HERE, out / "retake_install", ignore=shutil.ignore_patterns("__pycache__"))
    (out / "bin").mkdir()
    shutil.copy2(args.uv, out / "bin" / Path(args.uv).name)
    (out / "wheels").mkdir()
    shutil.copy2(args.wheel, out / "wheels")
    (out / "lock").mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy2(root / name, out / "lock" / name)
    (out / "share").mkdir()
    for name, source in PAYLOAD_SHARE.items():
        shutil.copy2(root / source, out / "share" / name)
    shutil.copy2(root / "packaging" / "linux" / "install.sh", out / "install.sh")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retake-install", description="Install, upgrade or remove Retake.")
    commands = parser.add_subparsers(required=True)
    p = commands.add_parser("install", help="install or upgrade Retake from this installer's payload")
    p.add_argument("--prefix", help="where Retake goes (default ~/.local/opt/retake, /opt/retake for root)")
    p.add_argument("--yes", action="store_true", help="ask nothing: take the default answers")
    p.add_argument("--backend", default="auto", choices=("auto", *backend.BACKENDS),
                   help="the torch build: auto (from the GPU found), cuda, rocm or cpu")
    p.add_argument("--wheels", help="install offline from this folder of wheels (build-linux.sh --offline-bundle)")
    p.add_argument("--python", default=sys.executable, help="the Python 3.11+ the runtime is built on")
    p.add_argument("--payload", default=str(HERE.parent), help=argparse.SUPPRESS)
    p.add_argument("--skip-system-check", action="store_true", help="install although Qt's system libraries lack")
    p.add_argument("--no-self-test", action="store_true", help=argparse.SUPPRESS)  # the tests' fake runtimes
    p.set_defaults(command=cmd_install)
    p = commands.add_parser("uninstall", help="remove Retake (user data only with --purge)")
    p.add_argument("--prefix")
    p.add_argument("--yes", action="store_true")
    p.add_argument("--purge", action="store_true", help="also remove settings, presets, imported models and cache")
    p.set_defaults(command=cmd_uninstall)
    p = commands.add_parser("backend", help="print the backend this machine gets")
    p.add_argument("--lock", default="uv.lock")
    p.add_argument("--backend", default="auto", choices=("auto", *backend.BACKENDS))
    p.set_defaults(command=cmd_backend)
    p = commands.add_parser("check-libs", help="the system libraries Qt lacks here")
    p.add_argument("--platform", default="xcb")
    p.set_defaults(command=cmd_check_libs)
    p = commands.add_parser("derive-libs", help="read the system libraries a PySide6 needs")
    p.add_argument("pyside6", help="site-packages/PySide6 of the PySide6 to ship")
    p.set_defaults(command=cmd_derive_libs)
    p = commands.add_parser("assemble", help="make an installer's payload folder")
    p.add_argument("--out", required=True)
    p.add_argument("--wheel", required=True)
    p.add_argument("--uv", required=True)
    p.add_argument("--root", default=str(HERE.parents[1]), help="the repository")
    p.set_defaults(command=cmd_assemble)
    return parser


if __name__ == "__main__":
    sys.exit(main())
