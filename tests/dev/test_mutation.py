"""The mutation check (make mutation): on a tiny module and its tiny test, it catches what the test pins,
reports what it does not (with the diff), honours the equivalents file, flags a hanging mutant as a timeout
and leaves the module as it found it."""

import textwrap

from dev.mutation.mutants import find_mutants
from dev.mutation.runner import read_equivalents, run_mutation

CALC = textwrap.dedent('''\
    """A tiny module to mutate."""


    def clamp_add(a, b, limit):
        total = a + b
        if total > limit:
            return limit
        return total


    def unused(x):
        return x * 2
''')
LOOP = textwrap.dedent("""\
    def count_up(n):
        i = 0
        while i < n:
            i += 1
        return i
""")
TEST = textwrap.dedent("""\
    from tinypkg.calc import clamp_add
    from tinypkg.loop import count_up


    def test_clamp_add():
        assert clamp_add(1, 2, 10) == 3
        assert clamp_add(5, 6, 10) == 10


    def test_count_up():
        assert count_up(3) == 3
""")


def _project(tmp_path):
    (tmp_path / "tinypkg").mkdir()
    (tmp_path / "tinypkg" / "__init__.py").write_text("")
    (tmp_path / "tinypkg" / "calc.py").write_text(CALC)
    (tmp_path / "tinypkg" / "loop.py").write_text(LOOP)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_calc.py").write_text(TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return tmp_path


def _by_description(path, source, description):
    return next(m for m in find_mutants(path, source) if m.description == description)


def test_mutants_are_single_changes_with_ids_that_survive_edits_elsewhere():
    mutants = find_mutants("tinypkg/calc.py", CALC)
    kinds = {m.operator for m in mutants}
    assert {"arith", "compare", "const", "delete"} <= kinds
    assert all(m.apply(CALC) != CALC for m in mutants)
    flip = _by_description("tinypkg/calc.py", CALC, "`total > limit` -> `(total >= limit)`")
    assert flip.apply(CALC).count(">=") == 1 and flip.line == 6
    shifted = find_mutants("tinypkg/calc.py", "import os\n\n" + CALC)
    moved = next(m for m in shifted if m.description == flip.description)
    assert moved.key == flip.key and moved.line == flip.line + 2  # the id does not hold the line number


def test_catches_reports_survivors_and_honours_the_equivalents_file(tmp_path):
    root = _project(tmp_path)
    lines = []
    report = run_mutation(
        ["tinypkg/calc.py"],
        ["tests/test_calc.py"],
        root=str(root),
        jobs=2,
        timeout=120,
        equivalents=None,
        out=lines.append,
    )
    status = {r.mutant.description: r.status for r in report.results}
    assert status["`a + b` -> `(a - b)`"] == "caught"
    assert status["`if total > limit: return limit` -> `pass`"] == "caught"
    assert status["`total > limit` -> `(total >= limit)`"] == "survived"  # the test never hits total == limit
    assert status["`x * 2` -> `(x / 2)`"] == "uncovered"  # no test calls unused()
    survivor = next(r for r in report.results if r.status == "survived")
    text = "\n".join(lines)
    assert "-    if total > limit:\n+    if (total >= limit):" in text and survivor.mutant.key in text
    assert (root / "tinypkg" / "calc.py").read_text() == CALC  # the working tree is never edited
    judged = len(report.results)
    assert report.score == 100.0 * report.count("caught", "timeout") / judged < 100.0

    # Listed as equivalent: not run, not counted.
    (root / "tests" / "mutation_equivalents.txt").write_text(
        "# module  id  reason\n"
        f"tinypkg/calc.py {survivor.mutant.key} clamp_add is only specified for total != limit\n"
        "tinypkg/calc.py delete:00000000 a mutant that no longer exists\n"
    )
    assert (
        read_equivalents(root / "tests" / "mutation_equivalents.txt")[("tinypkg/calc.py", survivor.mutant.key)]
        == "clamp_add is only specified for total != limit"
    )
    caught = _by_description("tinypkg/calc.py", CALC, "`a + b` -> `(a - b)`")
    again = run_mutation(
        ["tinypkg/calc.py"],
        ["tests/test_calc.py"],
        root=str(root),
        jobs=1,
        timeout=120,
        only=[survivor.mutant.key, caught.key],
        out=lines.append,
    )
    assert [r.status for r in again.results] == ["caught", "equivalent"]
    assert again.score == 100.0 and "caught, equivalents excluded: 100.0%" in again.summary()
    assert again.stale_equivalents == ["tinypkg/calc.py delete:00000000"]


def test_a_hanging_mutant_is_caught_as_a_timeout(tmp_path):
    root = _project(tmp_path)
    hang = _by_description("tinypkg/loop.py", LOOP, "`i += 1` -> `i -= 1`")
    report = run_mutation(
        ["tinypkg/loop.py"],
        ["tests/test_calc.py"],
        root=str(root),
        timeout=3,
        only=[hang.key],
        fork=False,
        equivalents=None,
        out=lambda s: None,
    )
    assert [r.status for r in report.results] == ["timeout"] and report.score == 100.0
    assert (root / "tinypkg" / "loop.py").read_text() == LOOP


def test_a_mutant_that_breaks_the_modules_import_is_caught(tmp_path):
    """The selected test ids then no longer collect ("not found", pytest exit 4): the tests did notice the mutant."""
    scaled = textwrap.dedent("""\
        SCALE = 2
        if SCALE != 2:
            raise ImportError("SCALE must be 2")


        def f(x):
            return x * SCALE
    """)
    root = _project(tmp_path)
    (root / "tinypkg" / "scaled.py").write_text(scaled)
    (root / "tests" / "test_scaled.py").write_text(
        "from tinypkg.scaled import f\n\n\ndef test_f():\n    assert f(3) == 6\n"
    )
    breaks = _by_description("tinypkg/scaled.py", scaled, "`SCALE != 2` -> `(SCALE == 2)`")
    report = run_mutation(
        ["tinypkg/scaled.py"],
        ["tests/test_scaled.py"],
        root=str(root),
        timeout=120,
        only=[breaks.key],
        fork=False,
        equivalents=None,
        out=lambda s: None,
    )
    assert [(r.status, r.detail) for r in report.results] == [("caught", "pytest exit 4")]
