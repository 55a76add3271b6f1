"""Floor check: a file of ``vision_attn`` imports only from its own floor or below (DESIGN.md, "The house").

    python dev/check_floors.py [ROOT]        # exit 1 and one line per violation: file:line, what, both floors

Floors: ``ops``/``attention`` 1, ``layers`` 2, ``models``/``losses``/``metrics`` 3, ``data``/``tasks``/``callbacks``
4, ``run`` 5; the package's ``__init__.py`` (the facade ``import vision_attn as va``) stands on the highest floor
it imports from. Every import counts, also one inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

PACKAGE = "vision_attn"
FLOORS = {
    "ops": 1,
    "attention": 1,
    "layers": 2,
    "models": 3,
    "losses": 3,
    "metrics": 3,
    "data": 4,
    "tasks": 4,
    "callbacks": 4,
    "run": 5,
}


def root_floor(root: Path) -> int:
    """The package root's floor: the highest floor its ``__init__.py`` imports from."""
    tree = ast.parse((root / PACKAGE / "__init__.py").read_text())
    floors = [
        FLOORS.get(target.split(".")[1], 0)
        for _, target in _imports(tree, PACKAGE, True)
        if target.startswith(PACKAGE + ".")
    ]
    return max(floors, default=0)


def floor_of(module: str, root: Path) -> Optional[int]:
    """The floor of a dotted ``vision_attn`` module name; None for a name outside the package; the package root's
    (:func:`root_floor`) for the root and a name it defines (``from vision_attn import __version__``)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) > 1 and parts[1] in FLOORS:
        return FLOORS[parts[1]]
    if len(parts) > 1 and ((root / PACKAGE / parts[1]).is_dir() or (root / PACKAGE / f"{parts[1]}.py").is_file()):
        raise ValueError(f"{module}: {PACKAGE}/{parts[1]} has no floor; add it to FLOORS in dev/check_floors.py")
    return root_floor(root)


def module_name(path: Path, root: Path) -> str:
    """``vision_attn/models/vit.py`` -> ``vision_attn.models.vit`` (``__init__.py`` names its package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[Tuple[int, str]]:
    """``(line, absolute module name)`` of each import in ``tree``, relative ones resolved against ``module``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or (node.level and target == PACKAGE):  # ``from .. import x``: x may be a module
                for alias in node.names:
                    yield node.lineno, f"{target}.{alias.name}"
            else:
                yield node.lineno, target


def check_file(path: Path, root: Path) -> List[str]:
    """One line per import in ``path`` from a floor above its own."""
    module = module_name(path, root)
    own = floor_of(module, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = []
    for line, target in _imports(tree, module, path.name == "__init__.py"):
        floor = floor_of(target, root)
        if own is not None and floor is not None and floor > own:
            problems.append(f"{path.relative_to(root)}:{line}: imports {target} (floor {floor}) from floor {own}")
    return problems


def check_tree(root: Path) -> List[str]:
    """Every violation under ``root/vision_attn``."""
    return [p for path in sorted((root / PACKAGE).rglob("*.py")) for p in check_file(path, root)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".", help="repository root (default: the current directory)")
    root = Path(parser.parse_args(argv).root).resolve()
    problems = check_tree(root)
    for line in problems:
        print(line)
    if problems:
        print(f"check_floors: {len(problems)} import(s) from a higher floor", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
