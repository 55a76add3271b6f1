"""``benchmark.py gpu-suite``: one call runs every part in its own process within a time budget, keeps going past
a part that fails or overruns, and leaves every figure (and why one is missing) in the JSON and its .md."""

import contextlib
import io
import json

import pytest

from vision_attn.run.bench import gpu_suite as suite
from vision_attn.run.bench import main


def _run(argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(["gpu-suite", "--device", "cpu", *argv])


@pytest.mark.bench
def test_the_suite_runs_its_parts_each_in_a_process_and_writes_their_figures(tmp_path):
    out = tmp_path / "suite.json"
    data = _run(["--smoke", "--dtype", "float32", "--parts", "gan", "compiled", "--json", str(out)])
    assert [p["name"] for p in data["parts"]] == ["gan", "compiled"] and all(p["status"] == "ok" for p in data["parts"])
    saved = json.loads(out.read_text())
    assert saved == data
    gan, compiled = saved["parts"]
    assert {r["implementation"] for r in gan["result"]["results"]} == {"default layout (NCHW)", "channels-last"}
    assert gan["result"]["config"]["dtype"] == "float32" and gan["argv"][-2:] == [
        "--json",
        str(tmp_path / "suite.gan.json"),
    ]
    assert [r["implementation"] for r in compiled["result"]["results"]] == ["eager", "torch.compile (aot_eager)"]
    md = out.with_suffix(".md").read_text()
    assert "## gan:" in md and "| channels-last |" in md and "torch.compile (aot_eager)" in md


@pytest.mark.bench
def test_a_failing_part_an_overrun_and_the_budget_are_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    parts = [
        suite.Part("broken", "a command that fails", ["speed", "--only", "nonsense"], 1),
        suite.Part(
            "slow",
            "a part that outlives the budget",
            [
                "pixel",
                "--batch",
                "1",
                "--channels",
                "16",
                "--global-sizes",
                "8",
                "--local-sizes",
                "8",
                "--repeats",
                "100000000",
            ],
            1,
        ),
        suite.Part("big", "a part whose estimate no longer fits", ["speed", "--only", "gan"], 10_000),
    ]
    monkeypatch.setattr(suite, "suite_parts", lambda smoke: parts)
    out = tmp_path / "suite.json"
    data = _run(["--budget-s", "12", "--json", str(out)])
    broken, slow, big = data["parts"]
    assert broken["status"] == "failed" and "invalid choice: 'nonsense'" in broken["error"]
    assert slow["status"] == "timeout" and "killed after" in slow["error"]
    assert big["status"] == "skipped" and "estimated 10000 s" in big["error"]
    assert json.loads(out.read_text())["parts"][2]["status"] == "skipped"


def test_asking_for_a_missing_gpu_or_an_unknown_part_is_one_line():
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device cuda, but torch.cuda.is_available\\(\\) is False"):
            main(["gpu-suite"])
    with pytest.raises(SystemExit, match="unknown --parts \\['vits'\\]"):
        _run(["--parts", "vits"])


@pytest.mark.bench
def test_the_limit_part_gives_fractions_of_the_peak(tmp_path):
    out = tmp_path / "suite.json"
    data = _run(["--smoke", "--dtype", "float32", "--parts", "limit", "--json", str(out)])
    (part,) = data["parts"]
    assert part["status"] == "ok", part.get("error")
    rows = [r for r in part["result"]["results"] if not r["implementation"].startswith("matmul peak")]
    assert {(r["mode"], r["ours"]) for r in rows} == {
        ("train", True),
        ("train", False),
        ("inference", True),
        ("inference", False),
    }
    assert all(r["flops"] > 0 and 0 < r["fraction"] <= 1.5 for r in rows)
    assert "fraction of peak" in out.with_suffix(".md").read_text()
