"""Results as data: ``write_results`` writes ``<benchmark>-<machine>.csv`` with the provenance columns, a rerun
replaces its own rows only; ``model_stats`` counts parameters and FLOPs; ``benchmark.py results`` writes a CSV; every
shipped ``results/*.csv`` has the columns the docs render from."""

import csv
from pathlib import Path

import pytest

from vision_attn.run.bench import build_parser
from vision_attn.run.bench.results import REQUIRED, model_stats, read_rows, render_table, write_results

REPO = Path(__file__).resolve().parents[2]
# benchmarks whose CSV does not yet go through write_results (only machine, date, commit checked); the lead removes
# an entry once the benchmark calls write_results
OWN_SCHEMA = {"limit": "tools/benchmark.py limit writes its own columns (issue 24)"}


def test_write_results_fills_provenance_and_a_rerun_replaces_only_its_rows(tmp_path):
    rows = [
        {"model": "a", "img_size": "32x32", "top1": 0.5, "machine": "cpu2-test"},
        {"model": "b", "img_size": "32x32", "top1": 0.6, "machine": "cpu2-test"},
    ]
    path = write_results("toy", rows, tmp_path)
    assert path == tmp_path / "toy-cpu2-test.csv"
    got = read_rows(path)
    assert list(got[0])[: len(REQUIRED)] == list(REQUIRED) and "top1" in got[0]
    assert all(r["date"] and r["commit"] for r in got)  # filled in: today (UTC) and this checkout's commit
    write_results(
        "toy", [{"model": "b", "img_size": "32x32", "top1": 0.7, "machine": "cpu2-test", "steps": 3}], tmp_path
    )
    got = {r["model"]: r for r in read_rows(path)}
    assert (
        got["a"]["top1"] == "0.5" and got["b"]["top1"] == "0.7" and got["b"]["steps"] == "3" and got["a"]["steps"] == ""
    )


@pytest.mark.parametrize(
    "rows, message",
    [
        ([], "no rows"),
        ([{"top1": 1}], "has no 'model'"),
        ([{"model": "a", "machine": "m1"}, {"model": "b", "machine": "m2"}], "one machine"),
    ],
)
def test_bad_rows_are_one_clear_error(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        write_results("toy", rows, tmp_path)
    with pytest.raises(ValueError, match="lower-case"):
        write_results("Toy Bench", [{"model": "a"}], tmp_path)


def test_model_stats_count_parameters_and_flops_at_the_default_size():
    import torch

    import vision_attn

    s = model_stats("resnet10_narrow_cifar")
    m = vision_attn.create_model("resnet10_narrow_cifar")
    assert s["params"] == sum(p.numel() for p in m.parameters()) and s["img_size"] == "32x32"
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        m.eval()(torch.randn(1, 3, 32, 32))
    assert s["gflops"] == pytest.approx(counter.get_total_flops() / 1e9, abs=1e-3) and s["gflops"] > 0


def test_results_command_writes_a_csv_per_suite(tmp_path):
    args = build_parser().parse_args(
        [
            "results",
            "--only",
            "speed",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--suite-args=speed:--attn-batch 1",
            "--out-dir",
            str(tmp_path),
        ]
    )
    out = args.func(args)
    (path,) = tmp_path.glob("speed-*.csv")
    assert out["written"]["speed"] == str(path)
    rows = read_rows(path)
    assert {r["implementation"] for r in rows} >= {"vision_attn.MultiHeadAttention", "torch.nn.MultiheadAttention"}
    assert all(float(r["median_ms"]) > 0 and float(r["throughput"]) > 0 and r["batch"] == "1" for r in rows)


def test_render_table_right_aligns_numbers():
    text = render_table([{"m": "a", "v": "1.5"}, {"m": "b", "v": ""}], ["m", "v"], {"v": "value"})
    assert text.splitlines()[:2] == ["| m | value |", "|---|---:|"] and text.endswith("| b | – |")


def test_every_shipped_results_file_has_the_provenance_columns():
    files = sorted((REPO / "results").glob("*.csv"))
    assert files
    for path in files:
        with open(path, newline="") as f:
            header = next(csv.reader(f))
        bench, machine = path.stem.split("-", 1)
        if bench not in OWN_SCHEMA:
            assert list(REQUIRED) == header[: len(REQUIRED)], path.name
        assert {"machine", "date", "commit"} <= set(header), path.name
        assert all(r["machine"] == machine and r["date"] and r["commit"] for r in read_rows(path)), path.name
