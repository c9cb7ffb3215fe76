"""`make lint`'s size rule (issue 30): no module over 500 lines and no function over 80 lines
in granary/, lifecycle/, storage/ and lineage/ (Alembic migrations aside, being generated).
Prints every offender with its size and exits 1 if there is one not in
``tools/sizes-pending.txt`` (the offenders left when the rule came in, being split; the list may
only shrink: a listed name that is no longer an offender fails too, so it is taken off)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("granary", "lifecycle", "storage", "lineage")
MAX_MODULE = 500  # physical lines
MAX_FUNCTION = 80  # lines from `def` (decorators aside) to the last line of the body


PENDING = Path(__file__).with_name("sizes-pending.txt")


def offenders(root: Path) -> dict[str, str]:
    """``{key: message}``; the key (``path`` or ``path:function``) is what the pending list
    names."""
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
    pending = {line.strip() for line in PENDING.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")} if PENDING.exists() else set()
    new = sorted(set(found) - pending)
    done = sorted(pending - set(found))
    for key in new:
        print(found[key])
    for key in done:
        print(f"{key}: within the limits now; take it off {PENDING.name}")
    if new or done:
        print(f"{len(new)} new offender(s) of the size rule, {len(done)} stale pending "
              "entr(ies)", file=sys.stderr)
        return 1
    print(f"size rule: no new offender ({len(pending)} pending in {PENDING.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
