"""Single-change mutants of a Python module, found on its AST and applied to its text.

Operators: ``compare`` (``<`` ``<=`` ``>`` ``>=`` ``==`` ``!=`` ``is`` ``in`` flipped), ``arith`` (``+``/``-``,
``*``/``/``, ``//`` and ``**`` to ``*``, unary minus dropped), ``const`` (a number n to n+1, n-1, 0;
``True``/``False`` swapped; ``None`` to 0), ``delete`` (an expression, assignment, ``raise`` or ``if`` without
``else`` replaced by ``pass``), ``swap_args`` (two neighbouring positional call arguments exchanged) and
``bool`` (``and``/``or``, ``&``/``|`` swapped, ``not``/``~`` dropped). Docstrings, f-strings, annotations and
``__all__`` are left alone. A mutant's id, ``operator:hash``, hashes the enclosing function, the changed text and
the change, so it survives edits elsewhere in the file (line numbers are shown, not part of the id).
"""

from __future__ import annotations

import ast
import copy
import hashlib
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import List, Optional, Tuple

__all__ = ["Mutant", "find_mutants"]

_COMPARE = {
    ast.Lt: (ast.LtE, ast.Gt),
    ast.LtE: (ast.Lt, ast.GtE),
    ast.Gt: (ast.GtE, ast.Lt),
    ast.GtE: (ast.Gt, ast.LtE),
    ast.Eq: (ast.NotEq,),
    ast.NotEq: (ast.Eq,),
    ast.Is: (ast.IsNot,),
    ast.IsNot: (ast.Is,),
    ast.In: (ast.NotIn,),
    ast.NotIn: (ast.In,),
}
_BINOP = {
    ast.Add: ("arith", ast.Sub),
    ast.Sub: ("arith", ast.Add),
    ast.Mult: ("arith", ast.Div),
    ast.Div: ("arith", ast.Mult),
    ast.FloorDiv: ("arith", ast.Mult),
    ast.Pow: ("arith", ast.Mult),
    ast.BitOr: ("bool", ast.BitAnd),
    ast.BitAnd: ("bool", ast.BitOr),
}
_UNARY = {ast.USub: "arith", ast.Not: "bool", ast.Invert: "bool"}
# Expressions that never need parentheses around them when put back in place of another one.
_ATOMS = (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.List, ast.Tuple, ast.Dict, ast.Set)


@dataclass(frozen=True)
class Mutant:
    """One change: ``source[start:end]`` becomes ``replacement`` in the module ``path`` (relative to the root)."""

    path: str
    line: int
    operator: str
    description: str
    start: int
    end: int
    replacement: str
    key: str  # stable id, "operator:hash"
    lines: Tuple[int, ...]  # lines whose execution means a test reaches the mutant
    import_time: bool  # runs when the module is imported (every test reaches it)

    def apply(self, source: str) -> str:
        return source[: self.start] + self.replacement + source[self.end :]


def _short(text: str, limit: int = 70) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Finder:
    def __init__(self, path: str, source: str) -> None:
        self.path, self.source = path, source
        self.lines = source.splitlines(keepends=True)
        self.line_starts = [0]
        for line in self.lines:
            self.line_starts.append(self.line_starts[-1] + len(line))
        self.mutants: List[Mutant] = []
        self.seen: Counter = Counter()

    def offset(self, lineno: int, col: int) -> int:
        """Character offset of an AST (line, UTF-8 byte column) position."""
        return self.line_starts[lineno - 1] + len(self.lines[lineno - 1].encode()[:col].decode("utf-8", "replace"))

    def add(
        self,
        node: ast.AST,
        new: ast.AST,
        operator: str,
        scope: str,
        in_func: bool,
        lines: Optional[Tuple[int, ...]] = None,
        text: Optional[str] = None,
    ) -> None:
        start = self.offset(node.lineno, node.col_offset)
        end = self.offset(node.end_lineno, node.end_col_offset)
        old = self.source[start:end]
        if text is None:
            text = ast.unparse(new)
            negative_const = isinstance(new, ast.Constant) and isinstance(new.value, (int, float)) and new.value < 0
            if isinstance(new, ast.expr) and (negative_const or not isinstance(new, (ast.Constant,) + _ATOMS)):
                text = f"({text})"  # keeps the precedence the surrounding expression had
        description = f"`{_short(old)}` -> `{_short(text)}`"
        ident = (scope, operator, _short(old, 10**6), text)
        self.seen[ident] += 1
        digest = hashlib.sha1(repr((ident, self.seen[ident])).encode()).hexdigest()[:8]
        lines = lines or tuple(range(node.lineno, node.end_lineno + 1))
        self.mutants.append(
            Mutant(
                self.path,
                node.lineno,
                operator,
                description,
                start,
                end,
                text,
                f"{operator}:{digest}",
                lines,
                not in_func,
            )
        )

    # --- the walk --------------------------------------------------------------------------------------
    def visit(self, node: ast.AST, scope: str, in_func: bool) -> None:
        if isinstance(node, ast.JoinedStr):
            return  # f-strings: error messages, and their positions are unreliable before Python 3.12
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                self.visit(d, scope, in_func)
            self.visit_body(node.body, f"{scope}.{node.name}", True)
            return
        if isinstance(node, ast.ClassDef):
            for d in node.decorator_list + node.bases:
                self.visit(d, scope, in_func)
            self.visit_body(node.body, f"{scope}.{node.name}", in_func)
            return
        self.mutate(node, scope, in_func)
        for field, value in ast.iter_fields(node):
            if field in ("annotation", "returns", "type_comment"):
                continue
            if (
                isinstance(node, ast.Compare)
                and field == "comparators"
                and isinstance(node.ops[0], (ast.Is, ast.IsNot))
            ):
                continue  # `x is None` -> `x is 0`: the flip to `is not` already covers it
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST) and not isinstance(child, (ast.expr_context, ast.operator, ast.cmpop)):
                    if isinstance(child, ast.stmt):
                        self.visit_statement(child, scope, in_func)
                    else:
                        self.visit(child, scope, in_func)

    def visit_body(self, body: List[ast.stmt], scope: str, in_func: bool) -> None:
        for stmt in body:
            self.visit_statement(stmt, scope, in_func)

    def visit_statement(self, stmt: ast.stmt, scope: str, in_func: bool) -> None:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            return  # docstring
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            return
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in stmt.targets):
            return
        if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and stmt.target.id == "__all__":
            return
        deletable = (
            isinstance(stmt, (ast.Expr, ast.Assign, ast.AugAssign, ast.Raise))
            or (isinstance(stmt, ast.AnnAssign) and stmt.value is not None)
            or (isinstance(stmt, ast.If) and not stmt.orelse)
        )
        if deletable:
            lines = tuple(range(stmt.lineno, (stmt.test if isinstance(stmt, ast.If) else stmt).end_lineno + 1))
            self.add(stmt, ast.Pass(), "delete", scope, in_func, lines, text="pass")
        self.visit(stmt, scope, in_func)

    def mutate(self, node: ast.AST, scope: str, in_func: bool) -> None:
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                for alt in _COMPARE.get(type(op), ()):
                    new = copy.deepcopy(node)
                    new.ops[i] = alt()
                    self.add(node, new, "compare", scope, in_func)
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINOP:
            operator, alt = _BINOP[type(node.op)]
            new = copy.deepcopy(node)
            new.op = alt()
            self.add(node, new, operator, scope, in_func, text=ast.unparse(new) if isinstance(node, ast.stmt) else None)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY and not isinstance(node.operand, ast.Constant):
            self.add(node, node.operand, _UNARY[type(node.op)], scope, in_func)
        elif isinstance(node, ast.BoolOp):
            new = copy.deepcopy(node)
            new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.add(node, new, "bool", scope, in_func)
        elif isinstance(node, ast.Constant):
            self.mutate_constant(node, scope, in_func)
        elif isinstance(node, ast.Call):
            for i in range(len(node.args) - 1):
                a, b = node.args[i], node.args[i + 1]
                if isinstance(a, ast.Starred) or isinstance(b, ast.Starred) or ast.dump(a) == ast.dump(b):
                    continue
                new = copy.deepcopy(node)
                new.args[i], new.args[i + 1] = new.args[i + 1], new.args[i]
                self.add(node, new, "swap_args", scope, in_func)

    def mutate_constant(self, node: ast.Constant, scope: str, in_func: bool) -> None:
        value = node.value
        if isinstance(value, bool):
            alts = [not value]
        elif value is None:
            alts = [0]
        elif isinstance(value, (int, float)):
            alts = list(dict.fromkeys(v for v in (value + 1, value - 1, type(value)(0)) if v != value))
        else:
            return  # strings, bytes, Ellipsis
        for alt in alts:
            self.add(node, ast.Constant(alt), "const", scope, in_func)


def find_mutants(path: str, source: str) -> List[Mutant]:
    """Every mutant of ``source`` (the text of ``path``) that compiles, in source order."""
    finder = _Finder(path, source)
    finder.visit_body(ast.parse(source).body, "", False)
    out = []
    for m in finder.mutants:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                compile(m.apply(source), path, "exec")
        except SyntaxError:
            continue
        out.append(m)
    return out
