"""``benchmark.py limit``: every family x mode gets FLOPs, a time and a fraction of the matmul peak timed beside it;
the counter's FLOPs of known ops equal their formulas, the CPU fused attention included (torch's counter misses it)."""

import contextlib
import csv
import io
import json

import torch
import torch.nn.functional as F
from torch import nn

from vision_attn.run.bench import main
from vision_attn.run.bench.limit import count_flops


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
