"""Function-length check: no function in floors 1-4 of ``vision_attn`` over ``--max`` lines of code (default 60).

    python dev/check_function_length.py [--max 60] [PATH ...]    # exit 1 and one line per long function

Lines of code are the function's lines that hold code: blank lines, comment-only lines and docstrings (its own and
those of functions and classes nested in it) do not count; a nested function counts in its own right and in the
function around it. Default paths: the floor 1-4 packages (``ops``, ``attention``, ``layers``, ``models``,
``losses``, ``metrics``, ``data``, ``tasks``, ``callbacks``).
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Set, Tuple

DEFAULT_MAX = 60
FLOOR_1_TO_4 = ("ops", "attention", "layers", "models", "losses", "metrics", "data", "tasks", "callbacks")
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
# Known and being fixed elsewhere; each entry is "path:qualified name". Remove an entry when its function is split.
ALLOWED: Set[str] = set()  # "path/to/module.py:function" exceptions, each with its reason


def _code_lines(source: str) -> Set[int]:
    """The line numbers that hold a token other than a comment, a newline or indentation."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: Set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def _docstring_lines(tree: ast.AST) -> Set[int]:
    """The lines of every docstring (module, class, function) in ``tree``."""
    lines: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, *_FUNCTIONS)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def long_functions(source: str, limit: int = DEFAULT_MAX) -> Iterator[Tuple[str, int, int]]:
    """``(qualified name, first line, lines of code)`` of each function in ``source`` over ``limit`` lines of code."""
    tree = ast.parse(source)
    code = _code_lines(source) - _docstring_lines(tree)

    def visit(node: ast.AST, prefix: str) -> Iterator[Tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, *_FUNCTIONS)):
                name = f"{prefix}{child.name}"
                if isinstance(child, _FUNCTIONS):
                    start = min([d.lineno for d in child.decorator_list] + [child.lineno])
                    n = len(code & set(range(start, (child.end_lineno or child.lineno) + 1)))
                    if n > limit:
                        yield name, child.lineno, n
                yield from visit(child, name + ".")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def check_paths(paths: Sequence[Path], limit: int = DEFAULT_MAX) -> List[str]:
    """One line per function over ``limit`` lines of code in the ``.py`` files under ``paths``."""
    files = sorted(f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py")))
    return [
        f"{f}:{line}: {name} has {n} lines of code (limit {limit})"
        for f in files
        for name, line, n in long_functions(f.read_text(), limit)
        if not _allowed(f, name)
    ]


def _allowed(path: Path, name: str) -> bool:
    return any(path.as_posix().endswith(where) and name == what for where, what in (a.split(":") for a in ALLOWED))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (default: floors 1-4 of vision_attn)")
    parser.add_argument("--max", type=int, default=DEFAULT_MAX, help="lines of code allowed per function")
    args = parser.parse_args(argv)
    paths = args.paths or [Path("vision_attn") / name for name in FLOOR_1_TO_4]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"check_function_length: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    problems = check_paths(paths, args.max)
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
