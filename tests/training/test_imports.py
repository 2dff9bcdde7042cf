"""The loop never imports stage 0: contrastive.py builds on loop.py, and run.py is the one module importing both."""

import ast
import subprocess
import sys
from pathlib import Path

import pointalign.training.loop as loop

LOOP = Path(loop.__file__)


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_loop_py_has_no_import_of_stage0():
    assert not any("contrastive" in name for name in _imported_modules(LOOP))
    assert "pointalign.training.loop" in _imported_modules(LOOP.parent / "contrastive.py")


def test_importing_the_loop_leaves_stage0_unimported():
    code = (
        "import sys, pointalign.training.loop\n"
        "print(sorted(m for m in sys.modules if m.startswith('pointalign.training.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pointalign.training.loop" in out
    assert "pointalign.training.contrastive" not in out and "pointalign.training.run" not in out
