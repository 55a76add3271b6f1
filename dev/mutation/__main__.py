"""Mutation check: ``python -m dev.mutation vision_attn/attention/core.py [--tests tests/attention/test_core.py]``.

Mutates the module one small change at a time (comparisons, arithmetic, constants, deleted statements, swapped
call arguments, and/or), runs the tests that reach each change, and prints caught / survived with each
survivor's diff. Survivors judged equivalent go in ``tests/mutation_equivalents.txt``
(``<module path> <mutant id> <reason>``). ``make mutation MODULE=... [TESTS=...] [ARGS=...]`` runs this.
"""

import argparse
import sys

from .mutants import find_mutants
from .runner import DEFAULT_EQUIVALENTS, run_mutation


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("modules", nargs="+", help="module files to mutate, relative to --root (pooled into one score)")
    p.add_argument(
        "--tests",
        default=None,
        help="space-separated pytest paths or node ids (default: the module's entry in DEFAULT_TESTS, "
        "else every test file naming one of its public names)",
    )
    p.add_argument("--max-mutants", type=int, default=None, help="sample this many mutants (default: all)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--jobs", type=int, default=2, help="mutants run in parallel")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per mutant (default: 60 + 3x its tests' baseline time); a mutant still running is caught",
    )
    p.add_argument("--equivalents", default=DEFAULT_EQUIVALENTS, help="the equivalent-mutants file ('' = none)")
    p.add_argument(
        "--all-tests", action="store_true", help="run every test for each mutant, not only those reaching it"
    )
    p.add_argument("--only", action="append", default=None, metavar="ID", help="run only this mutant id (repeatable)")
    p.add_argument("--no-fork", action="store_true", help="start a new Python for each mutant (no fork server)")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--fail-under", type=float, default=None, help="exit 1 when fewer than this %% are caught")
    p.add_argument("--root", default=".", help="repository root (default: the current directory)")
    args = p.parse_args(argv)
    if args.list:
        for module in args.modules:
            with open(f"{args.root}/{module}") as f:
                for m in find_mutants(module, f.read()):
                    print(f"{m.path}:{m.line} {m.key} {m.description}")
        return 0
    try:
        report = run_mutation(
            args.modules,
            args.tests.split() if args.tests else None,
            root=args.root,
            max_mutants=args.max_mutants,
            seed=args.seed,
            jobs=args.jobs,
            timeout=args.timeout,
            equivalents=args.equivalents or None,
            all_tests=args.all_tests,
            only=args.only,
            fork=not args.no_fork,
        )
    except KeyboardInterrupt:
        print("mutation: interrupted; its runs are stopped and the working tree was never edited", file=sys.stderr)
        return 130
    return 1 if args.fail_under is not None and report.score < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
