"""tools/benchmark.py and vision_attn.run.bench: what the output promises (every contender, a usable ratio), never a
speed."""

from __future__ import annotations

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vision_attn.run.bench import main
from vision_attn.run.bench.harness import Implementation, measure

TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark.py"


@pytest.fixture(scope="module")
def speed_run(tmp_path_factory):
    """One tiny ``speed`` run of the command-line tool (attention batch 2, ViT batch 1 at 32 px), from another
    working directory: its JSON and its printed table."""
    workdir = tmp_path_factory.mktemp("speed")
    path = workdir / "speed.json"
    # One thread: tiny ops on a busy machine otherwise spend most of their time at thread barriers.
    proc = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "speed",
            "--repeats",
            "2",
            "--warmup",
            "0",
            "--vit-batch",
            "1",
            "--attn-batch",
            "2",
            "--vit-img-size",
            "32",
            "--threads",
            "1",
            "--json",
            str(path),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(path.read_text()), proc.stdout


@pytest.mark.bench
def test_json_has_every_contender_and_the_machine(speed_run):
    data, _ = speed_run
    names = {(r["benchmark"].split(" ")[0], r["implementation"].split(" (")[0]) for r in data["results"]}
    assert names == {
        ("attention", "vision_attn.MultiHeadAttention"),
        ("attention", "torch.nn.MultiheadAttention"),
        ("attention", "timm Attention"),
        ("ViT-S/16", "vision_attn vit_small_patch16_224"),
        ("ViT-S/16", "timm vit_small_patch16_224"),
    }
    assert {"cpu", "torch_threads", "torch", "timm"} <= set(data["machine"])
    assert data["config"]["repeats"] == 2


@pytest.mark.bench
def test_each_peer_has_a_positive_finite_ratio_to_ours(speed_run):
    data, _ = speed_run
    for benchmark_name in {r["benchmark"] for r in data["results"]}:
        rows = [r for r in data["results"] if r["benchmark"] == benchmark_name]
        ours = [r for r in rows if r["ours"]]
        assert len(ours) == 1, benchmark_name
        for r in rows:
            assert len(r["times_ms"]) == 2 and r["median_ms"] > 0 and r["iqr_ms"] >= 0
            if r["ours"]:
                assert r["peer_over_ours"] is None
            else:
                ratio = r["peer_over_ours"]
                assert math.isfinite(ratio) and ratio > 0
                assert ratio == pytest.approx(r["median_ms"] / ours[0]["median_ms"])
                assert math.isfinite(r["paired_peer_over_ours"]) and r["paired_peer_over_ours"] > 0


@pytest.mark.bench
def test_printed_markdown_table_names_every_implementation(speed_run):
    data, printed = speed_run
    assert "| benchmark | implementation | median ms | IQR ms | peer/ours |" in printed
    table_rows = [line for line in printed.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table_rows) == len(data["results"])
    for r in data["results"]:
        assert any(r["implementation"] in line and r["benchmark"] in line for line in table_rows)
    assert "n/a" in printed  # no CUDA peak memory on the CPU


def test_outputs_of_different_shape_are_refused():
    impls = [
        Implementation("b", "ours", lambda: torch.zeros(2, 3), ours=True),
        Implementation("b", "peer", lambda: torch.zeros(2, 4)),
    ]
    with pytest.raises(RuntimeError, match="peer gives output"):
        measure(impls, repeats=1, warmup=0, device=torch.device("cpu"))


def test_models_benchmark_compares_with_timm_where_it_has_the_model_and_reports_mfu():
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            data = main(
                [
                    "speed",
                    "--only",
                    "models",
                    "--models",
                    "resnet18",
                    "vit_nano_patch4_32",
                    "--models-batch",
                    "1",
                    "--repeats",
                    "1",
                    "--warmup",
                    "0",
                    "--threads",
                    "1",
                    "--peak-tflops",
                    "1",
                ]
            )
    finally:
        torch.set_num_threads(threads)
    rows = {(r["benchmark"].split(" (")[0], r["implementation"]): r for r in data["results"]}
    assert set(rows) == {
        ("resnet18 train", "vision_attn resnet18"),
        ("resnet18 train", "timm resnet18"),
        ("resnet18 inference", "vision_attn resnet18"),
        ("resnet18 inference", "timm resnet18"),
        ("vit_nano_patch4_32 train", "vision_attn vit_nano_patch4_32"),  # timm has no such model: ours alone
        ("vit_nano_patch4_32 inference", "vision_attn vit_nano_patch4_32"),
    }
    ours = rows[("resnet18 train", "vision_attn resnet18")]
    # resnet18 at 224 px: 1.8 GMACs = 3.6 GFLOPs forward per image, backward ~2x that
    assert 3 * 3.0e9 < ours["train_step_flops"] < 3 * 4.4e9
    assert ours["mfu"] == pytest.approx(ours["train_step_flops"] / (ours["median_ms"] / 1e3) / 1e12)
    assert ours["images_per_s"] == pytest.approx(1e3 / ours["median_ms"])
    printed = out.getvalue()
    assert "| resnet18 | train |" in printed and "| vit_nano_patch4_32 | inference |" in printed


def test_gan_benchmark_times_the_configs_model_in_both_memory_layouts(tmp_path, monkeypatch):
    config = tmp_path / "gan.yaml"
    config.write_text(
        "model:\n  class_path: vision_attn.tasks.GenerationTask\n  init_args:\n    model: sagan_32\n"
        "    model_args: {ch: 8, g_mults: [1, 1, 1, 1], d_mults: [1, 1, 1, 1], z_dim: 8, embed_dim: 4}\n"
    )
    from vision_attn.tasks import GenerationTask

    steps = []  # the benchmark must time the task's own training step, not a copy of it
    task_step = GenerationTask.gan_step
    monkeypatch.setattr(
        GenerationTask, "gan_step", lambda task, *a, **k: steps.append(task) or task_step(task, *a, **k)
    )
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            data = main(
                [
                    "speed",
                    "--only",
                    "gan",
                    "--gan-config",
                    str(config),
                    "--gan-batch",
                    "2",
                    "--repeats",
                    "2",
                    "--warmup",
                    "0",
                    "--threads",
                    "1",
                ]
            )
    finally:
        torch.set_num_threads(threads)
    assert len(steps) == 2 * (1 + 2) and len(set(map(id, steps))) == 2  # per layout: the shape check + 2 repeats
    rows = {r["implementation"]: r for r in data["results"]}
    assert set(rows) == {"default layout (NCHW)", "channels-last"}
    assert rows["channels-last"]["ours"] and "gan.yaml" in rows["channels-last"]["benchmark"]
    ratio = rows["default layout (NCHW)"]["peer_over_ours"]
    assert math.isfinite(ratio) and ratio > 0
    assert data["config"]["gan_batch"] == 2
    with pytest.raises(SystemExit, match="no config file"):
        main(["speed", "--only", "gan", "--gan-config", str(tmp_path / "missing.yaml"), "--repeats", "1"])


@pytest.mark.bench
def test_compiled_benchmark_times_each_family_eager_and_compiled_and_the_gan_compiles_in_place(tmp_path):
    config = tmp_path / "gan.yaml"
    config.write_text(
        "model:\n  class_path: vision_attn.tasks.GenerationTask\n  init_args:\n    model: sagan_32\n"
        "    model_args: {ch: 8, g_mults: [1, 1, 1, 1], d_mults: [1, 1, 1, 1], z_dim: 8, embed_dim: 4}\n"
    )
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            data = main(
                [
                    "speed",
                    "--compile",
                    "--compiled-families",
                    "gan",
                    "detr",
                    "--compiled-batch",
                    "2",
                    "--compiled-img-size",
                    "32",
                    "--compile-backend",
                    "aot_eager",
                    "--gan-config",
                    str(config),
                    "--repeats",
                    "1",
                    "--warmup",
                    "1",
                    "--threads",
                    "1",
                ]
            )
    finally:
        torch.set_num_threads(threads)
    rows = data["results"]
    assert [(r["benchmark"].split(" ")[0], r["implementation"]) for r in rows] == [
        ("SA-GAN", "eager"),
        ("SA-GAN", "torch.compile (aot_eager)"),
        ("detr_tiny_prenorm", "eager"),
        ("detr_tiny_prenorm", "torch.compile (aot_eager)"),
    ]
    assert all(r["ours"] == ("compile" in r["implementation"]) for r in rows)
    assert all(math.isfinite(r["peer_over_ours"]) and r["peer_over_ours"] > 0 for r in rows if not r["ours"])
    assert data["config"]["compile_backend"] == "aot_eager" and data["config"]["compiled_batch"] == 2


@pytest.mark.bench
def test_pixel_benchmark_measures_each_peak_alone_and_the_materialised_peer_needs_more(tmp_path):
    path = tmp_path / "pixel.json"
    out = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out):
            data = main(
                [
                    "pixel",
                    "--only",
                    "global",
                    "--global-sizes",
                    "32",
                    "--batch",
                    "1",
                    "--channels",
                    "16",
                    "--repeats",
                    "1",
                    "--warmup",
                    "0",
                    "--threads",
                    "1",
                    "--json",
                    str(path),
                ]
            )
    finally:
        torch.set_num_threads(threads)
    ours, peer = data["results"]
    assert ours["ours"] and not peer["ours"] and ours["kind"] == peer["kind"] == "global"
    # (B, heads, N, N) = 1024^2 float32 probabilities and their gradient: MiBs the fused kernel never holds
    assert ours["peak_mib"] > 0 and peer["memory_peer_over_ours"] == pytest.approx(peer["peak_mib"] / ours["peak_mib"])
    assert peer["memory_peer_over_ours"] > 1.5
    assert json.loads(path.read_text())["results"] == json.loads(json.dumps(data["results"]))
    assert f"| global | 32x32 | {peer['implementation']} |" in out.getvalue()


def test_pixel_kernels_on_sasa_shapes_take_batch_and_channels_from_each_layer(monkeypatch):
    """``--kernel-shapes sasa`` (what the removed run/local_kernel_bench.py timed): each row is one of
    ``SASA_SHAPES``' (batch, channels, size), not --batch/--channels/--kernel-sizes."""
    from vision_attn.run.bench import pixel as pixel_bench

    monkeypatch.setattr(pixel_bench, "SASA_SHAPES", ((1, 16, 4),))  # tiny stand-in for the real stages
    monkeypatch.setattr(pixel_bench, "cpu_step_peak_in_child", lambda *case: 1.0)  # peaks: tested above
    argv = [
        "pixel",
        "--only",
        "kernels",
        "--kernel-shapes",
        "sasa",
        "--batch",
        "3",
        "--channels",
        "32",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
    ]
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            data = main(argv)
    finally:
        torch.set_num_threads(threads)
    assert data["config"]["kernel_shapes"] == "sasa"
    assert {(r["batch"], r["channels"], r["size"]) for r in data["results"]} == {(1, 16, 4)}


@pytest.mark.bench
def test_pixel_benchmark_compares_the_local_layers_own_kernels_and_checks_each_equals_halo(monkeypatch):
    """``pixel --only kernels``: halo (what backend="auto" runs) vs unfold (and flex where it has a backward), each
    first checked to compute halo's output; a kernel that computes something else stops the benchmark, named."""
    from vision_attn.layers import pixel_attention
    from vision_attn.run.bench.pixel import kernel_implementations

    argv = [
        "pixel",
        "--only",
        "kernels",
        "--kernel-sizes",
        "8",
        "--batch",
        "1",
        "--channels",
        "16",
        "--repeats",
        "2",
        "--warmup",
        "0",
        "--threads",
        "1",
    ]
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            data = main(argv)
    finally:
        torch.set_num_threads(threads)
    rows = data["results"]
    names = [r["implementation"] for r in rows]
    assert names[:2] == ["LocalSelfAttention2d backend=halo (auto)", "LocalSelfAttention2d backend=unfold"]
    assert all(r["kind"] == "kernels" and r["size"] == 8 for r in rows) and rows[0]["ours"]
    assert all(math.isfinite(r["paired_peer_over_ours"]) for r in rows[1:])
    assert ("LocalSelfAttention2d backend=flex" in names) == torch.cuda.is_available()  # no CPU backward for flex

    real = pixel_attention.unfold_local_attention
    monkeypatch.setattr(pixel_attention, "unfold_local_attention", lambda *a, **k: real(*a, **k) * 1.01)
    with pytest.raises(AssertionError, match="unfold differs from halo"):
        kernel_implementations("kernels", 8, 1, 16, torch.device("cpu"), torch.float32, 0)

    def lacking(*args, **kwargs):  # as FlexAttention's CUDA kernels did for heads below 16
        raise NotImplementedError("NYI: embedding dimension of the query, key, and value must be at least 16")

    monkeypatch.setattr(pixel_attention, "unfold_local_attention", real)
    monkeypatch.setattr(pixel_attention, "flex_local_attention", lacking)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        impls = kernel_implementations("kernels-inference", 8, 1, 16, torch.device("cpu"), torch.float32, 0)
    assert [i.name for i in impls] == [
        "LocalSelfAttention2d backend=halo (auto)",
        "LocalSelfAttention2d backend=unfold",
    ]
    assert "backend=flex left out: NotImplementedError: NYI: embedding dimension" in printed.getvalue()
