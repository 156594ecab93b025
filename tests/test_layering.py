"""The house's direction: pipeline/ imports neither cli/ nor gui/ nor Qt, and cli/ does not import gui/.

The engine serves the CLI, the GUI, scripts and batch jobs; none of them may leak into it, and the
command line must run on a machine without a display.
"""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QT = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "superqt")


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level names each module of a package imports, read from its source."""
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(("package", "forbidden"), [
    ("pipeline", {"cli", "gui", *QT}),
    ("cli", {"gui", *QT}),
])
def test_no_module_imports_against_the_direction(package, forbidden):
    offenders = {module: sorted(names & forbidden) for module, names in _imports(package).items()
                 if names & forbidden}
    assert not offenders, f"{package}/ imports what it must not: {offenders}"


def test_pipeline_pulls_in_no_qt_at_run_time():
    optional = {"pipeline.batch.runner": "ray"}  # imported only where its extra is installed
    modules = sorted(name for p in (ROOT / "pipeline").rglob("*.py")
                     if importlib.util.find_spec(optional.get(
                         name := p.relative_to(ROOT).with_suffix("").as_posix().replace("/", "."), "pipeline")))
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name.removesuffix('.__init__'))\n"
        f"qt = sorted(m for m in sys.modules if m.split('.')[0] in {(*QT, 'gui', 'cli')!r})\n"
        "print(','.join(qt))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert len(modules) > 10
    assert out.stdout.strip() == "", f"pipeline pulled in {out.stdout.strip()}"
