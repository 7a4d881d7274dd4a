"""The test suite stays navigable: test modules sit in folders named after the source area they test, helpers shared
between test modules live in `tests/fixtures/`, and no test module imports another (importing one runs its
module-level setup and couples unrelated files)."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_test_module_imports_another():
    offenders = []
    files = sorted(path for path in TESTS.rglob("*.py") if "__pycache__" not in path.parts)
    assert any(path.parent != TESTS for path in files if path.name.startswith("test_"))  # the subfolders are scanned
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):  # absolute or relative (`from .test_x import y`)
                module = node.module or ""
                names = [module] + [f"{module}.{alias.name}".lstrip(".") for alias in node.names]
            offenders += [
                f"{path.relative_to(TESTS)}:{node.lineno} imports {name}"
                for name in names
                if any(part.startswith("test_") for part in name.split("."))
            ]
    assert not offenders, "move the shared helper to tests/fixtures/: " + "; ".join(offenders)
