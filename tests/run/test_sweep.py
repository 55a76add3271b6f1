"""The data-size sweep: its config checks, its results file (resume, torn rows), its report, and one real cell."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vision_attn.data import SyntheticShapesDataModule
from vision_attn.run.data_size import (
    RESULT_COLUMNS,
    SweepConfigError,
    append_result,
    epoch_budget_steps,
    gap_trend,
    load_sweep,
    paired_gaps,
    read_results,
    run_sweep,
    summarize,
    t_interval,
    write_report,
)
from vision_attn.run.data_size.runner import SweepLockedError, cell_hash, sweep_lock

REPO = Path(__file__).resolve().parents[2]


def row(model="vit", fraction=1.0, seed=0, top1=0.5, n_train=300, cell_hash=""):
    return {
        "model": model,
        "fraction": fraction,
        "seed": seed,
        "n_train": n_train,
        "top1": top1,
        "top5": 0.9,
        "train_seconds": 1.5,
        "images_per_second": 100.0,
        "devices": 1,
        "steps": 40,
        "params": 1234,
        "cell_hash": cell_hash,
        "code_version": "test",
    }


def hash_of(sweep: Path, model: str, fraction: float, seed: int, extra=()) -> str:
    """The cell hash the sweep computes now for one of its cells (what a row made by that cell records)."""
    spec = load_sweep(sweep)
    (cell,) = [c for c in spec.cells() if (c.model, c.fraction, c.seed) == (model, fraction, seed)]
    return cell_hash(spec, cell, extra)


def write_sweep(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_shipped_sweeps_parse_and_name_existing_configs():
    for name in ("data_size_quick", "data_size_cifar10", "data_size_cifar100", "data_size_transfer"):
        spec = load_sweep(REPO / "configs" / "benchmark" / f"{name}.yaml")
        assert (spec.steps or spec.min_steps) >= 1 and spec.fractions == sorted(spec.fractions)
        assert all(Path(m["config"]).is_file() for m in spec.models.values())
        assert len(spec.cells()) == len(spec.models) * len(spec.fractions) * len(spec.seeds)
        assert spec.baseline in spec.models and "resnet" in spec.baseline  # gaps are to a declared CNN
    cifar = load_sweep(REPO / "configs/benchmark/data_size_cifar10.yaml")
    assert cifar.fractions == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0] and cifar.seeds == [0, 1, 2]
    # the laptop study: >= 3 seeds, >= 5 fractions spanning >= 30x, equal epochs, CNN vs global vs 3x3-window ViT
    quick = load_sweep(REPO / "configs/benchmark/data_size_quick.yaml")
    assert len(quick.seeds) >= 3 and len(quick.fractions) >= 5 and max(quick.fractions) / min(quick.fractions) >= 30
    assert quick.epochs is not None and quick.steps is None and quick.baseline == "resnet10_narrow_cifar"
    assert any('"attn_window": 3' in a for m in quick.models.values() for a in m["args"])
    assert "--data.init_args.task=relational" in quick.args


@pytest.mark.parametrize(
    "body, words",
    [
        ("fractions: [0.5]\nbudget: {steps: 3}\n", "missing 'models'"),
        ("models: {a: {config: configs/quickstart.yaml}}\nfractions: [0, 1]\nbudget: {steps: 3}\n", "(0, 1]"),
        ("models: {a: {config: configs/quickstart.yaml}}\nfractions: [1]\nbudget: {epochs: 0}\n", "{steps: N}"),
        (
            "models: {a: {config: configs/quickstart.yaml}}\nfractions: [1]\nbudget: {epochs: 2, steps: 3}\n",
            "{epochs: E",
        ),
        (
            "models: {a: {config: configs/quickstart.yaml}}\nfractions: [1]\nbudget: {steps: 3}\nbaseline: b\n",
            "baseline 'b' is not one of the models ['a']",
        ),
        ("models: {a: {config: nowhere.yaml}}\nfractions: [1]\nbudget: {steps: 3}\n", "nowhere.yaml not found"),
        (
            "models: {a: {config: configs/quickstart.yaml}}\nfractions: [1]\nbudget: {steps: 3}\nseed: [1]\n",
            "unknown keys",
        ),
        ("models: [\n", "not valid YAML"),
    ],
)
def test_bad_sweep_configs_name_the_file_and_the_problem(tmp_path, monkeypatch, body, words):
    monkeypatch.chdir(REPO)
    path = write_sweep(tmp_path / "bad.yaml", body)
    with pytest.raises(SweepConfigError) as err:
        load_sweep(path)
    assert str(path) in str(err.value) and words in str(err.value)


def test_results_file_keeps_finished_rows_and_drops_only_a_torn_last_row(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, row("vit", 0.1))
    append_result(path, row("cnn", 0.1))
    good = path.read_text()
    path.write_text(good + "vit,1,0,30")  # killed while appending: no newline
    rows = read_results(path)
    assert [(r["model"], r["fraction"]) for r in rows] == [("vit", 0.1), ("cnn", 0.1)]
    assert path.read_text() == good  # the torn row is gone, the finished ones kept byte for byte
    assert next(csv.reader([good.splitlines()[0]])) == list(RESULT_COLUMNS)

    path.write_text(good.replace("cnn,0.1", "cnn,zero"))  # a broken row in the middle is not silently dropped
    with pytest.raises(ValueError, match=r"results.csv, line 3"):
        read_results(path)
    assert "cnn,zero" in path.read_text()


def test_report_has_a_line_per_model_with_the_seed_spread(tmp_path):
    for seed, (v, c) in enumerate([(0.30, 0.50), (0.40, 0.60)]):
        append_result(tmp_path / "results.csv", row("vit", 0.1, seed, v, 30))
        append_result(tmp_path / "results.csv", row("cnn", 0.1, seed, c, 30))
    append_result(tmp_path / "results.csv", row("vit", 1.0, 0, 0.9))
    append_result(tmp_path / "results.csv", row("cnn", 1.0, 0, 0.8))
    md, png = write_report(tmp_path, baseline="cnn", budget_rule="equal epochs: 3 passes")
    summary = summarize(read_results(tmp_path / "results.csv"))
    assert list(summary) == ["vit", "cnn"]  # the sweep's order
    vit01 = summary["vit"][0]
    assert vit01["top1"] == pytest.approx(0.35) and (vit01["top1_min"], vit01["top1_max"]) == (0.30, 0.40)
    assert vit01["seeds"] == 2 and vit01["n_train"] == 30
    text = md.read_text()
    assert "| vit | 0.001M | 35.0 ± 7.1 (n=2) | 90.0 ± 0.0 (n=1) |" in text
    # the gap to the declared baseline (second in the file): paired by seed, no CI from one seed
    assert "| vit | -20.0 [-20.0, -20.0] (n=2) | +10.0 (n=1) |" in text
    assert "Budget rule: equal epochs: 3 passes." in text and "| cnn | 40 | 40 |" in text  # steps per cell
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_sweep_runs_missing_cells_only_and_appends_a_full_row(tmp_path, monkeypatch):
    """A rerun skips what results.csv has (the resume after a kill); the cell that runs is a real fit."""
    monkeypatch.chdir(REPO)
    data = tmp_path / "data"
    sweep = write_sweep(
        tmp_path / "tiny.yaml",
        f"""
fractions: [0.25, 1.0]
seeds: [3]
budget: {{steps: 3}}
args: [--data.init_args.root={data}, --data.init_args.num_train=400, --data.init_args.num_test=100,
       --data.init_args.val_split=100, --data.init_args.batch_size=50, --model.init_args.warmup_steps=1,
       --trainer.enable_progress_bar=false]
models:
  vit:
    config: configs/quickstart.yaml
    args: ['--model.init_args.model_args={{"embed_dim": 16, "depth": 1, "num_heads": 2}}']
""",
    )
    out = tmp_path / "out"
    out.mkdir()
    append_result(
        out / "results.csv", row("vit", 1.0, 3, 0.123, cell_hash=hash_of(sweep, "vit", 1.0, 3))
    )  # finished before the "kill"
    with open(out / "results.csv", "a") as f:
        f.write("vit,0.25,3,7")  # the row being written when the sweep was killed
    logs = []
    rows = run_sweep(sweep, out, log=logs.append)
    assert "1 already in" in logs[0] and "1 to run" in logs[0]
    assert [(r["model"], r["fraction"], r["seed"]) for r in rows] == [("vit", 1.0, 3), ("vit", 0.25, 3)]
    assert rows[0]["top1"] == 0.123  # the finished cell was not rerun
    new = rows[1]
    dm = SyntheticShapesDataModule(
        root=str(data), num_train=400, num_test=100, val_split=100, train_fraction=0.25, fraction_seed=3
    )
    dm.setup()
    # the stratified fraction of the 300 non-validation images (to within one image per class)
    assert new["n_train"] == dm.n_train and abs(dm.n_train - 75) <= 10
    assert 0.0 <= new["top1"] <= new["top5"] <= 1.0 and new["devices"] == 1
    assert new["train_seconds"] > 0 and new["images_per_second"] > 0
    cell = out / "cells" / "vit" / "f0.25-s3"
    ckpt_dir = next(cell.glob("version_*/checkpoints"))
    assert (ckpt_dir / "last.ckpt").is_file()
    metrics = list(csv.DictReader(open(next(cell.glob("version_*/metrics.csv")))))
    assert max(int(m["step"]) for m in metrics) <= 3  # the equal-steps budget, not epochs
    assert (out / "data_size.png").is_file() and "| vit |" in (out / "data_size.md").read_text()

    logs.clear()
    assert run_sweep(sweep, out, log=logs.append) == rows  # nothing left to run
    assert "0 to run" in logs[0]


def test_failed_cells_are_reported_after_the_others_ran(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = write_sweep(
        tmp_path / "bad_model.yaml",
        """
fractions: [1.0]
budget: {steps: 1}
models:
  nope:
    config: configs/quickstart.yaml
    args: [--model.init_args.model=vit_does_not_exist]
""",
    )
    with pytest.raises(RuntimeError, match=r"1 cell\(s\) failed.*nope/f1-s0.*cell.log"):
        run_sweep(sweep, tmp_path / "out", python=sys.executable, log=lambda *_: None)
    log = (tmp_path / "out" / "cells" / "nope" / "f1-s0" / "cell.log").read_text()
    assert "vit_does_not_exist" in log
    assert not (tmp_path / "out" / "results.csv").exists()


def test_cells_finished_elsewhere_are_collected_and_print_cells_lists_the_rest(tmp_path, monkeypatch):
    """Cells run as cluster jobs (from --print-cells) leave result.json; the next sweep run collects them."""
    monkeypatch.chdir(REPO)
    sweep = write_sweep(
        tmp_path / "s.yaml",
        """
fractions: [0.5, 1.0]
budget: {steps: 7}
models:
  cnn: {config: configs/quickstart_resnet.yaml}
""",
    )
    out = tmp_path / "out"
    logs = []
    commands = run_sweep(sweep, out, extra_args=["--trainer.num_nodes", "2"], print_cells=True, log=logs.append)
    assert len(commands) == 2 and logs == commands and not (out / "results.csv").exists()
    assert "--trainer.max_steps 7" in commands[0] and "--trainer.num_nodes 2" in commands[0]
    assert "--data.init_args.train_fraction 0.5" in commands[0] and "cnn/f0.5-s0/result.json" in commands[0]
    assert " -m vision_attn.run.data_size cell " in commands[0]

    for fraction in ("0.5", "1"):  # what the jobs leave behind
        cell = out / "cells" / "cnn" / f"f{fraction}-s0"
        cell.mkdir(parents=True)
        made_by = hash_of(sweep, "cnn", float(fraction), 0, ["--trainer.num_nodes", "2"])
        (cell / "result.json").write_text(
            json.dumps({**row("cnn", fraction, 0, 0.7, cell_hash=made_by), "fraction": fraction})
        )
    nodes = ["--trainer.num_nodes", "2"]  # the same command again: the same cells
    rows = run_sweep(sweep, out, extra_args=nodes, log=logs.append)
    assert [(r["model"], r["fraction"], r["top1"]) for r in rows] == [("cnn", 0.5, 0.7), ("cnn", 1.0, 0.7)]
    assert "2 collected from cells/" in logs[-1] and "0 to run" in logs[-1]
    assert run_sweep(sweep, out, extra_args=nodes, print_cells=True, log=lambda *_: None) == []


def test_journal_refuses_a_duplicated_row_and_keeps_a_complete_last_row_without_newline(tmp_path):
    path = tmp_path / "results.csv"
    append_result(path, row("vit", 0.1, cell_hash="abc"))
    append_result(path, row("cnn", 0.1, cell_hash="abc"))
    text = path.read_text()
    path.write_text(text + text.splitlines(keepends=True)[1])  # the vit row again
    with pytest.raises(ValueError, match=r"results.csv, line 4: duplicate of line 2 \(model vit"):
        read_results(path)
    path.write_text(text.rstrip("\n"))  # complete, but the newline never made it to disk
    assert [r["model"] for r in read_results(path)] == ["vit", "cnn"]
    append_result(path, row("vit", 1.0, cell_hash="abc"))  # must not be glued onto the cnn row
    assert [(r["model"], r["fraction"]) for r in read_results(path)] == [("vit", 0.1), ("cnn", 0.1), ("vit", 1.0)]


def test_rows_record_what_made_them_and_a_changed_budget_or_config_reruns_the_cells(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = tmp_path / "cnn.yaml"
    config.write_text((REPO / "configs/quickstart_resnet.yaml").read_text())
    body = f"""
fractions: [0.5, 1.0]
budget: {{steps: 7}}
models:
  cnn: {{config: {config}}}
"""
    sweep = write_sweep(tmp_path / "s.yaml", body)
    out = tmp_path / "out"
    for f in (0.5, 1.0):
        append_result(out / "results.csv", row("cnn", f, 0, 0.7, cell_hash=hash_of(sweep, "cnn", f, 0)))
    assert run_sweep(sweep, out, print_cells=True, log=lambda *_: None) == []  # nothing changed: nothing to run
    write_sweep(sweep, body.replace("steps: 7", "steps: 9"))  # a new budget: every cell is another experiment
    assert len(run_sweep(sweep, out, print_cells=True, log=lambda *_: None)) == 2
    write_sweep(sweep, body)
    config.write_text(config.read_text().replace("lr: ", "lr: 0.5 #"))  # an edited model config
    assert len(run_sweep(sweep, out, print_cells=True, log=lambda *_: None)) == 2
    assert {r["code_version"] for r in read_results(out / "results.csv")} == {"test"}
    # the report shows only rows of the configuration as it is now: here, none
    assert write_report(out, current={hash_of(sweep, "cnn", 1.0, 0)}) is None


def test_a_second_sweep_in_the_same_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    sweep = write_sweep(
        tmp_path / "s.yaml",
        "fractions: [1.0]\nbudget: {steps: 1}\nmodels:\n  cnn: {config: configs/quickstart_resnet.yaml}\n",
    )
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from vision_attn.run.data_size.runner import sweep_lock\n"
            "with sweep_lock(__import__('pathlib').Path(sys.argv[1])):\n print('held', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SweepLockedError, match=rf"{out}: another sweep \(pid {holder.pid}\) is running"):
            run_sweep(sweep, out, print_cells=True, log=lambda *_: None)
    finally:
        holder.kill()
        holder.wait()
    with sweep_lock(out):  # released when its holder died
        pass


FAKE_PYTHON = """#!/bin/sh
# stands in for python: records the cell's pid and its arguments, then runs as long as a fit would
echo $$ >> "$(dirname "$0")/pids"
echo "cell started: $*"
exec sleep 120
"""


def test_cells_die_with_a_killed_sweep_and_a_rerun_keeps_their_logs(tmp_path, monkeypatch):
    import os
    import signal
    import time

    monkeypatch.chdir(REPO)
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    sweep = write_sweep(
        tmp_path / "s.yaml",
        "fractions: [1.0]\nbudget: {steps: 1}\nmodels:\n  cnn: {config: configs/quickstart_resnet.yaml}\n",
    )
    out = tmp_path / "out"
    code = "import sys; from vision_attn.run.data_size import run_sweep; run_sweep(sys.argv[1], sys.argv[2], python=sys.argv[3])"
    log = out / "cells" / "cnn" / "f1-s0" / "cell.log"
    for attempt in (1, 2):
        sweep_proc = subprocess.Popen([sys.executable, "-c", code, str(sweep), str(out), str(fake)])
        deadline = time.time() + 60
        while (
            time.time() < deadline
            and len((fake.parent / "pids").read_text().split() if (fake.parent / "pids").exists() else []) < attempt
        ):
            time.sleep(0.2)
        cell_pid = int((fake.parent / "pids").read_text().split()[-1])
        os.kill(sweep_proc.pid, signal.SIGKILL)  # kill -9 the sweep
        sweep_proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and _alive(cell_pid):
            time.sleep(0.1)
        assert not _alive(cell_pid), "the cell outlived its sweep"
    text = log.read_text()
    assert text.count("cell started:") == 2 and text.count("=== ") == 2  # the rerun appended, nothing truncated


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_submitit_local_launcher_runs_the_cells_as_a_job_array_and_collects_them(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    data = tmp_path / "data"
    sweep = write_sweep(
        tmp_path / "s.yaml",
        f"""
fractions: [0.5, 1.0]
budget: {{steps: 2}}
args: [--data.init_args.root={data}, --data.init_args.num_train=200, --data.init_args.num_test=50,
       --data.init_args.val_split=50, --data.init_args.batch_size=25, --trainer.enable_progress_bar=false]
models:
  cnn:
    config: configs/quickstart_resnet.yaml
""",
    )
    SyntheticShapesDataModule(root=str(data), num_train=200, num_test=50, val_split=50).prepare_data()
    out = tmp_path / "out"
    logs = []
    rows = run_sweep(sweep, out, launcher={"cluster": "local", "time_min": 10}, log=logs.append)
    assert sorted((r["model"], r["fraction"]) for r in rows) == [("cnn", 0.5), ("cnn", 1.0)]
    assert all(r["cell_hash"] == hash_of(sweep, "cnn", r["fraction"], 0) for r in rows)
    assert any("job array" in line for line in logs) and (out / "submitit").is_dir()
    assert run_sweep(sweep, out, launcher={"cluster": "local"}, print_cells=True, log=lambda *_: None) == []


# ---- the study's statistics: paired gaps to the declared baseline, their CI, and the sentence ------------------------
def gap_rows(gaps_by_seed, fractions=(0.01, 0.1, 1.0), base=0.6):
    """Rows of a baseline ``cnn`` at ``base`` top-1 and a ``vit`` at ``base + gap`` (one gap list per seed)."""
    rows = []
    for seed, gaps in enumerate(gaps_by_seed):
        for f, g in zip(fractions, gaps):
            rows += [row("cnn", f, seed, base), row("vit", f, seed, base + g)]
    return rows


def test_gap_ci_is_the_paired_t_interval_of_a_hand_worked_example():
    mean, low, high = t_interval([0.1, 0.2, 0.3])
    # mean 0.2, sd 0.1, t(0.975, 2 df) = 4.302653: half-width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert (
        mean == pytest.approx(0.2)
        and low == pytest.approx(-0.048414, abs=1e-6)
        and high == pytest.approx(0.448414, abs=1e-6)
    )
    assert t_interval([0.5]) == (0.5, None, None)
    # paired by seed: seed 1's baseline is better, seed 2 has no baseline (not paired); gaps 0.1, 0.2, 0.3
    rows = [
        row("cnn", 0.5, 0, 0.5),
        row("cnn", 0.5, 1, 0.7),
        row("cnn", 0.5, 3, 0.4),
        row("vit", 0.5, 0, 0.6),
        row("vit", 0.5, 1, 0.9),
        row("vit", 0.5, 3, 0.7),
        row("vit", 0.5, 2, 0.1),
    ]
    (point,) = paired_gaps(rows, "cnn")["vit"]
    assert point["n"] == 3 and sorted(point["by_seed"]) == [0, 1, 3]
    assert (point["gap"], point["low"], point["high"]) == pytest.approx((0.2, -0.048414, 0.448414), abs=1e-6)


@pytest.mark.parametrize(
    "gaps_by_seed, trend, crossing, words",
    [
        # behind at every size, less so with data: shrinks, does not cross
        # (per-seed slopes 0.100, 0.095, 0.105 per decade: mean 0.1, sd 0.005, 4.302653 * 0.005 / sqrt(3) = 0.0124)
        (
            [[-0.30, -0.20, -0.10], [-0.32, -0.21, -0.13], [-0.28, -0.19, -0.07]],
            "shrinks",
            "does not cross",
            "the gap shrinks with data (slope +10.0 top-1 points per 10x data, 95% CI [+8.8, +11.2] over 3 seeds), and it "
            "does not cross zero (model behind at every fraction; CI below 0 at 3 of 3)",
        ),
        # behind with little data, ahead with a lot: the claim
        (
            [[-0.20, 0.00, 0.20], [-0.22, 0.01, 0.18], [-0.18, -0.01, 0.22]],
            "shrinks",
            "crosses",
            "crosses zero (CI below 0 at fraction 0.01, above 0 at 1)",
        ),
        # behind by a constant, seeds disagree on the slope: neither
        (
            [[-0.10, -0.12, -0.09], [-0.05, -0.02, -0.07], [-0.08, -0.10, -0.06]],
            "no clear trend",
            "does not cross",
            "shows no clear trend with data",
        ),
        # falls further behind
        (
            [[-0.02, -0.10, -0.20], [-0.01, -0.12, -0.21], [-0.03, -0.11, -0.19]],
            "widens",
            "does not cross",
            "widens with data",
        ),
        # the mean changes sign, but no fraction's CI excludes 0
        (
            [[-0.05, 0.05, 0.0], [0.03, -0.06, 0.01], [-0.01, 0.04, -0.02]],
            "no clear trend",
            "no significant crossing",
            "does not cross significantly",
        ),
    ],
)
def test_gap_sentence_says_whether_the_gap_shrinks_and_crosses(gaps_by_seed, trend, crossing, words):
    res = gap_trend(paired_gaps(gap_rows(gaps_by_seed), "cnn")["vit"])
    assert (res["trend"], res["crossing"]) == (trend, crossing)
    assert words in res["sentence"]


def test_report_gaps_are_to_the_declared_baseline_and_survive_missing_cells(tmp_path):
    results = tmp_path / "results.csv"
    # the baseline finishes last and is not among the first two models; vit_w lacks 0.1, vit lacks 1.0 for seed 1,
    # and `late` has no fraction in common with the baseline
    for seed in (0, 1):
        append_result(results, row("vit", 0.1, seed, 0.30 + 0.02 * seed, 30))
        append_result(results, row("vit_w", 1.0, seed, 0.70 + 0.02 * seed))
    append_result(results, row("vit", 1.0, 0, 0.65))
    append_result(results, row("late", 0.5, 0, 0.4))
    for seed in (0, 1):
        for f, top1 in ((0.1, 0.5), (1.0, 0.8)):
            append_result(results, row("cnn", f, seed, top1 + 0.01 * seed, 30 if f == 0.1 else 300))
    md, png = write_report(tmp_path, baseline="cnn")
    text = md.read_text()
    assert "Gap to the baseline `cnn`" in text and "`vit` − `cnn`" in text and "`vit_w` − `cnn`" in text
    assert "| vit | -19.5 [-25.9, -13.1] (n=2) | — | -15.0 (n=1) |" in text  # 0.5 has no baseline cells
    assert "| vit_w | — | — | -9.5 [-15.9, -3.1] (n=2) |" in text
    assert "| late | — | — | — |" in text and "`late` − `cnn`: no fraction has both" in text
    assert "| late | 0.001M | — | 40.0 ± 0.0 (n=1) | — |" in text
    assert png.stat().st_size > 10_000
    assert "No baseline declared" in write_report(tmp_path)[0].read_text()
    assert "`nope` has no finished cells" in write_report(tmp_path, baseline="nope")[0].read_text()


def test_equal_epochs_budget_gives_each_size_its_passes_with_a_floor():
    assert epoch_budget_steps(4500, 64, 10, 100) == 700  # 70 full batches x 10 epochs
    assert epoch_budget_steps(1800, 64, 10, 100) == 280
    assert epoch_budget_steps(135, 64, 10, 100) == 100  # 2 batches x 10 = 20 steps: the floor
    assert epoch_budget_steps(30, 64, 2.5, 1) == 3  # smaller than a batch: one batch per epoch
    assert epoch_budget_steps(4500, 64, 10, 1, devices=2) == 350


def test_results_written_before_steps_and_params_are_read_and_upgraded(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(",".join(RESULT_COLUMNS[:9]) + "\nvit,0.1,0,30,0.5,0.9,1.5,100.0,1\n")
    (old,) = read_results(path)
    assert old["top1"] == 0.5 and old["steps"] is None and old["params"] is None
    append_result(path, row("cnn", 0.1, 0, 0.6))
    assert path.read_text().splitlines()[0] == ",".join(RESULT_COLUMNS) and RESULT_COLUMNS[9:11] == ("steps", "params")
    assert [(r["model"], r["steps"], r["params"]) for r in read_results(path)] == [
        ("vit", None, None),
        ("cnn", 40, 1234),
    ]


def test_an_equal_epochs_cell_trains_epochs_times_its_batches_and_records_steps_and_params(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    data = tmp_path / "data"
    sweep = write_sweep(
        tmp_path / "epochs.yaml",
        f"""
fractions: [1.0]
budget: {{epochs: 2, min_steps: 3}}
args: [--data.init_args.root={data}, --data.init_args.num_train=400, --data.init_args.num_test=100,
       --data.init_args.val_split=100, --data.init_args.batch_size=50, --model.init_args.warmup_steps=1,
       --trainer.enable_progress_bar=false, --data.init_args.task=relational]
models:
  vit:
    config: configs/quickstart.yaml
    args: ['--model.init_args.model_args={{"embed_dim": 16, "depth": 1, "num_heads": 2}}']
""",
    )
    (r,) = run_sweep(sweep, tmp_path / "out", log=lambda *_: None)
    assert r["n_train"] == 300 and r["steps"] == 12  # 2 epochs x 6 batches of 50, above the floor of 3
    from vision_attn import create_model

    assert r["params"] == sum(
        p.numel()
        for p in create_model("vit_nano_patch4_32", num_classes=4, embed_dim=16, depth=1, num_heads=2).parameters()
    )
    metrics = list(csv.DictReader(open(next((tmp_path / "out/cells/vit/f1-s0").glob("version_*/metrics.csv")))))
    assert max(int(m["step"]) for m in metrics if m["step"]) <= 12 and any(m.get("val/top1") for m in metrics)


FAKE_CELL = """#!{python}
# stands in for python -m vision_attn.run.data_size cell: records when it ran and in which slot, leaves a row
import json, os, sys, time
a = sys.argv
opt = lambda k: a[a.index(k) + 1]
start = time.time()
time.sleep(1.5)
with open(os.path.join(os.path.dirname(a[0]), "runs.jsonl"), "a") as f:
    f.write(json.dumps({{"label": opt("--model-label"), "start": start, "end": time.time(),
                        "threads": os.environ.get("OMP_NUM_THREADS")}}) + "\\n")
row = {{"model": opt("--model-label"), "fraction": opt("--fraction"), "seed": int(opt("--seed")), "n_train": 10,
       "top1": 0.5, "top5": 1.0, "train_seconds": 1.5, "images_per_second": 6.7, "devices": 1, "steps": 1,
       "params": 1, "cell_hash": opt("--cell-hash"), "code_version": "fake"}}
json.dump(row, open(opt("--result"), "w"))
"""


def test_two_parallel_cells_run_at_once_each_in_its_own_slot(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text(FAKE_CELL.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setattr("os.cpu_count", lambda: 4)  # two slots of two threads each, whatever this machine has
    sweep = write_sweep(
        tmp_path / "s.yaml",
        "fractions: [1.0]\nbudget: {steps: 1}\nmodels:\n"
        "  a: {config: configs/quickstart_resnet.yaml}\n  b: {config: configs/quickstart_resnet.yaml}\n",
    )
    logs = []
    rows = run_sweep(sweep, tmp_path / "out", parallel_cells=2, python=str(fake), log=logs.append)
    assert sorted(r["model"] for r in rows) == ["a", "b"]
    assert {line.split("(slot ")[1] for line in logs if "start" in line} == {"0)", "1)"}  # both slots used
    runs = [json.loads(line) for line in (fake.parent / "runs.jsonl").read_text().splitlines()]
    assert runs[0]["start"] < runs[1]["end"] and runs[1]["start"] < runs[0]["end"]  # at the same time
    assert [r["threads"] for r in runs] == ["2", "2"]  # each slot a share of the CPU threads
    with pytest.raises(ValueError, match="parallel_cells must be >= 1; got 0"):
        run_sweep(sweep, tmp_path / "out", parallel_cells=0, python=str(fake), log=logs.append)
