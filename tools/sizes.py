"""`make lint`'s size rule (issue 30): no module over 500 lines and no function over 80 lines
in granary/, lifecycle/, storage/ and lineage/ (Alembic migrations aside, being generated).
Prints every offender with its size and exits 1 if there is one."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("granary", "lifecycle", "storage", "lineage")
MAX_MODULE = 500  # physical lines
MAX_FUNCTION = 80  # lines from `def` (decorators aside) to the last line of the body


def offenders(root: Path) -> dict[str, str]:
    """``{path or path:function: what is over the limit}``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            source = path.read_text(encoding="utf-8")
            name = path.relative_to(root)
            lines = len(source.splitlines())
            if lines > MAX_MODULE:
                found[str(name)] = (f"{name}: {lines} lines (at most {MAX_MODULE}): split "
                                    "the module")
            for node in ast.walk(ast.parse(source, str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    size = (node.end_lineno or node.lineno) - node.lineno + 1
                    if size > MAX_FUNCTION:
                        found[f"{name}:{node.name}"] = (
                            f"{name}:{node.lineno}: {node.name}() is {size} lines (at most "
                            f"{MAX_FUNCTION}): split the function")
    return found


def main() -> int:
    found = offenders(Path(__file__).resolve().parents[1])
    for message in found.values():
        print(message)
    if found:
        print(f"{len(found)} module(s) or function(s) over the size limits", file=sys.stderr)
        return 1
    print(f"size rule: every module within {MAX_MODULE} lines, every function within "
          f"{MAX_FUNCTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
