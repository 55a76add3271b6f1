"""``benchmark.py limit``: every family x mode gets FLOPs, a time and a fraction of the matmul peak timed beside it;
the counter's FLOPs of known ops equal their formulas, the CPU fused attention included (torch's counter misses it)."""

import contextlib
import csv
import io
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vision_attn.run.bench import main
from vision_attn.run.bench.limit import count_flops


@pytest.mark.bench
def test_the_limit_command_gives_every_family_and_mode_a_fraction_of_the_peak(tmp_path):
    out = tmp_path / "limit.json"
    with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.redirect_stderr(io.StringIO()):
        data = main(
            [
                "limit",
                "--toy",
                "--threads",
                "1",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--json",
                str(out),
                "--results",
                str(tmp_path),
            ]
        )
    rows = [r for r in data["results"] if not r["implementation"].startswith("matmul peak")]
    ours = {(r["family"], r["mode"]) for r in rows if r["ours"]}
    assert ours == {
        (f, m)
        for f in ("ViT-S/16", "SASA-26", "non-local R18-CIFAR", "DETR-R50", "SA-GAN (shapes)")
        for m in ("train", "inference")
    }
    peers = {r["implementation"] for r in rows if not r["ours"]}
    assert {"timm vit_small_patch16_224", "timm resnet26", "timm resnet18"} <= peers
    assert any(p.startswith("transformers DetrForObjectDetection") for p in peers)
    for r in rows:
        assert r["flops"] > 0 and 0 < r["fraction"] <= 1.5, r
        assert r["peak_flop_per_s"] > r["flop_per_s"] * 0.5
    vit_train = next(r for r in rows if r["ours"] and r["family"] == "ViT-S/16" and r["mode"] == "train")
    assert "native_layer_norm" in vit_train["uncounted_ops"] and "mm" not in vit_train["uncounted_ops"]
    assert json.loads(out.read_text())["results"] == json.loads(json.dumps(data["results"]))
    assert "| SASA-26 | inference | vision_attn sasa_resnet26 |" in printed.getvalue()
    (table,) = tmp_path.glob("limit-*.csv")
    lines = list(csv.DictReader(table.open()))
    assert len(lines) == len(rows) and {"machine", "date", "commit", "fraction"} <= set(lines[0])


def test_flop_counts_equal_the_formulas_attention_on_cpu_included():
    B, N, i, o = 3, 5, 16, 24
    flops, missed = count_flops(lambda: nn.Linear(i, o)(torch.randn(B, N, i)).relu())
    assert flops == 2 * B * N * i * o and "relu" in missed
    Bh, H, Nq, Nk, d = 2, 3, 7, 11, 8
    q, k, v = (torch.randn(Bh, H, n, d, requires_grad=True) for n in (Nq, Nk, Nk))
    forward, _ = count_flops(lambda: F.scaled_dot_product_attention(q, k, v))
    assert forward == 2 * (2 * Bh * H * Nq * Nk * d)  # q k^T and p v
    both, _ = count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
    assert both == forward * 7 // 2  # the backward: 5 matmuls of the 2 of the forward


def test_sasa_counts_its_model_flops_whatever_the_kernel_wastes():
    from vision_attn.layers import LocalSelfAttention2d
    from vision_attn.run.bench.limit import model_flops_step

    B, C, H, W, nh, k = 2, 16, 9, 10, 2, 5
    d, N = C // nh, H * W
    # the definition: the 1x1 projection, q.k and p.v over each pixel's k x k window, the row and column terms
    formula = 2 * B * N * C * 3 * C + 2 * (2 * B * nh * N * k * k * d) + 2 * B * nh * N * k * d
    x = torch.randn(B, C, H, W)
    counted = {}
    for block in (3, 8):
        layer = LocalSelfAttention2d(C, k, nh, block_size=block).eval()
        step = lambda layer=layer: layer(x)  # noqa: E731
        counted[block] = (count_flops(model_flops_step(layer, step))[0], count_flops(step)[0])
        assert layer.backend == "auto"  # restored
    assert counted[3][0] == counted[8][0] == formula
    assert counted[3][1] != counted[8][1] and min(counted[3][1], counted[8][1]) > formula  # the halo kernel's work
    assert model_flops_step(nn.Linear(2, 2), lambda: None) is None


def test_paired_ratios_get_a_median_confidence_interval_and_old_csvs_gain_the_column(tmp_path):
    from vision_attn.run.bench.harness import median_ci95
    from vision_attn.run.bench.limit import CSV_COLUMNS, write_csv

    assert median_ci95(list(range(11, 0, -1))) == (2, 10)
    assert median_ci95([3.0, 1.0, 2.0]) == (1.0, 3.0)
    old = tmp_path / f"limit-cpu-{os.cpu_count()}core.csv"
    columns = [c for c in CSV_COLUMNS if c != "paired_ci95"]
    old.write_text(",".join(columns) + "\n" + ",".join("x" for _ in columns) + "\n")
    row = {
        "implementation": "timm resnet26",
        "family": "SASA-26",
        "mode": "train",
        "batch": 2,
        "size": [8, 8],
        "flops": 1e9,
        "median_ms": 1.0,
        "flop_per_s": 1e12,
        "peak_flop_per_s": 2e12,
        "fraction": 0.5,
        "paired_peer_over_ours": 0.9,
        "paired_ci95": (0.8, 1.1),
        "load": None,
        "uncounted_ops": [],
    }
    write_csv([row], {"torch_threads": 1}, str(tmp_path), commit="abc")
    lines = list(csv.DictReader(old.open()))
    assert list(lines[0]) == CSV_COLUMNS and lines[0]["paired_ci95"] == "" and lines[0]["fraction"] == "x"
    assert lines[1]["paired_ci95"] == "0.800-1.100" and lines[1]["commit"] == "abc"
