"""dev/check_floors.py and dev/check_function_length.py: the tree passes, a planted violation fails, named."""

from pathlib import Path

from dev.check_floors import check_tree
from dev.check_floors import main as floors_main
from dev.check_function_length import check_paths, long_functions

REPO = Path(__file__).resolve().parents[2]


def _package(root: Path, files: dict) -> Path:
    for rel, text in {"vision_attn/__init__.py": "from .models import thing\n", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_tree_has_no_import_from_a_higher_floor():
    assert check_tree(REPO) == []


def test_a_planted_upward_import_is_named_with_both_floors(tmp_path, capsys):
    root = _package(
        tmp_path,
        {
            "vision_attn/models/__init__.py": "thing = 1\n",
            "vision_attn/attention/__init__.py": "",
            # the deleted attention/plot.py shim: floor 1 reaching floor 5 lazily, inside a function
            "vision_attn/attention/plot.py": "def __getattr__(name):\n    from ..run.viz import attention\n",
            "vision_attn/layers/ok.py": "from ..attention import plot\nimport torch\n",
            "vision_attn/run/__init__.py": "import vision_attn as va\nfrom ..tasks import x\n",
            "vision_attn/tasks/__init__.py": "from vision_attn import thing\n",
        },
    )
    assert check_tree(root) == ["vision_attn/attention/plot.py:2: imports vision_attn.run.viz (floor 5) from floor 1"]
    assert floors_main([str(root)]) == 1
    assert "vision_attn/attention/plot.py:2" in capsys.readouterr().out
    (root / "vision_attn/attention/plot.py").unlink()
    assert floors_main([str(root)]) == 0


def test_a_facade_import_counts_at_the_facades_floor(tmp_path):
    root = _package(
        tmp_path, {"vision_attn/models/__init__.py": "", "vision_attn/ops/boxes.py": "import vision_attn\n"}
    )
    assert check_tree(root) == ["vision_attn/ops/boxes.py:1: imports vision_attn (floor 3) from floor 1"]


def test_floors_1_to_4_have_no_function_over_60_lines_of_code():
    assert (
        check_paths(
            [
                REPO / "vision_attn" / p
                for p in ("ops", "attention", "layers", "models", "losses", "metrics", "data", "tasks", "callbacks")
            ]
        )
        == []
    )


def test_a_planted_long_function_is_named_and_comments_docstrings_blanks_do_not_count(tmp_path):
    # ok(): its def line + 59 statements = 60 lines of code, however many docstring, comment and blank lines
    padding = '    """A docstring.\n\n    of several lines.\n    """\n' + "    # a comment\n\n" * 20
    ok = "def ok():\n" + padding + "".join(f"    x{i} = {i}\n" for i in range(59))
    long = "class Big:\n    def long(self):\n" + "".join(f"        x{i} = {i}\n" for i in range(61))
    source = ok + "\n\n" + long
    line = source.splitlines().index("    def long(self):") + 1
    assert list(long_functions(source, 60)) == [("Big.long", line, 62)]
    path = tmp_path / "mod.py"
    path.write_text(source)
    assert check_paths([tmp_path]) == [f"{path}:{line}: Big.long has 62 lines of code (limit 60)"]
