"""One-off (kept as provenance): the measured tables of the README at 0bb54c6, moved into results/*.csv.

Each row keeps the machine, date and commit it was measured on as the README and `git log -S` tell them: `commit`
is the commit that first put the figure into the README (the code measured is that commit or its parent); a
machine the README does not name is `cpu2-unrecorded`. Run from the repository root:
``python dev/migrate_readme_results.py`` (rewrites every results/*.csv from the README at 0bb54c6; run it before any new measurement).
"""

import csv
import io
import subprocess
from pathlib import Path

from vision_attn.run.bench.results import write_results

XEON25 = "cpu2-intel-xeon-2.50ghz"  # "2 cores of an Intel Xeon @ 2.50GHz" (README, 2026-11-21)
XEON = "cpu2-intel-xeon"  # "the 2-core Xeon", model string not recorded
EPYC = "cpu2-amd-epyc"  # "2 cores of an AMD EPYC" / "the idle 2-core AMD EPYC" (2026-12-02)
OUT = Path("results")


def rows(common, *specs, keys):
    return [dict(common, **dict(zip(keys, s))) for s in specs]


def main():
    for p in OUT.glob("*.csv"):
        p.unlink()
    # speed: attention fwd+bwd
    c = dict(
        machine=XEON25,
        date="2026-11-21",
        commit="4553ddf",
        device="cpu",
        dtype="float32",
        threads=2,
        torch="2.15.0",
        timm="1.0.31",
        repeats=10,
        warmup=2,
        notes="load average 3-4 from other jobs: absolute times inflated, ratios interleaved",
    )
    k = ("model", "benchmark", "implementation", "ours", "batch", "img_size", "median_ms", "iqr_ms", "peer_over_ours")
    b = "attention fwd+bwd (B=32, N=197, D=384, H=6)"
    write_results(
        "speed",
        rows(
            c,
            ("MultiHeadAttention", b, "vision_attn.MultiHeadAttention", True, 32, "", 393.6, 27.1, ""),
            ("MultiHeadAttention", b, "torch.nn.MultiheadAttention", False, 32, "", 535.3, 35.3, 1.36),
            ("MultiHeadAttention", b, "timm Attention (fused_attn=True)", False, 32, "", 399.3, 37.3, 1.01),
            keys=k,
        ),
        OUT,
        key=("benchmark",),
    )
    b = "ViT-S/16 train step (B=8, 224px)"
    write_results(
        "vit",
        rows(
            c,
            ("vit_small_patch16_224", b, "vision_attn vit_small_patch16_224", True, 8, "224x224", 7168.8, 120.7, ""),
            ("vit_small_patch16_224", b, "timm vit_small_patch16_224", False, 8, "224x224", 7259.6, 481.5, 1.01),
            keys=k,
        ),
        OUT,
        key=("benchmark",),
    )
    c = dict(
        machine=XEON25,
        date="2026-11-21",
        commit="fd08c14",
        device="cpu",
        dtype="float32",
        threads=1,
        repeats=10,
        notes="load 4-7 from other jobs; transformers' DetrForObjectDetection (sdpa) with the same weights",
    )
    k = (
        "model",
        "benchmark",
        "implementation",
        "ours",
        "batch",
        "img_size",
        "median_ms",
        "throughput",
        "peer_over_ours",
    )
    write_results(
        "detr",
        rows(
            c,
            (
                "detr_resnet50",
                "DETR-R50 inference (B=2, 320x427)",
                "vision_attn detr_resnet50",
                True,
                2,
                "320x427",
                2422,
                0.83,
                "",
            ),
            (
                "detr_resnet50",
                "DETR-R50 inference (B=2, 320x427)",
                "transformers DetrForObjectDetection",
                False,
                2,
                "320x427",
                2437,
                0.82,
                1.01,
            ),
            (
                "detr_resnet50",
                "DETR-R50 train step (B=2, 320x427)",
                "vision_attn detr_resnet50",
                True,
                2,
                "320x427",
                6985,
                0.29,
                "",
            ),
            (
                "detr_resnet50",
                "DETR-R50 train step (B=2, 320x427)",
                "transformers DetrForObjectDetection",
                False,
                2,
                "320x427",
                7655,
                0.26,
                "1.10",
            ),
            keys=k,
        ),
        OUT,
        key=("benchmark",),
    )
    c = dict(
        machine=XEON25,
        date="2026-11-22",
        commit="c794464",
        device="cpu",
        dtype="float32",
        repeats=20,
        notes="idle (load 1.4); D step, G step, EMA of GenerationTask.gan_step",
    )
    k = ("model", "benchmark", "implementation", "ours", "batch", "img_size", "median_ms", "iqr_ms", "peer_over_ours")
    b = "SA-GAN quickstart train step, sagan_shapes.yaml widths (B=32, 32px)"
    write_results(
        "gan",
        rows(
            c,
            ("sagan_32", b, "default layout (NCHW)", False, 32, "32x32", 521.7, 31.8, 1.27),
            ("sagan_32", b, "channels-last (channels_last: true)", True, 32, "32x32", 411.0, 36.9, ""),
            keys=k,
        ),
        OUT,
        key=("benchmark",),
    )
    c = dict(
        machine=EPYC,
        date="2026-12-02",
        commit="bf719a3",
        device="cpu",
        dtype="float32",
        threads=2,
        torch="2.14.1",
        repeats=10,
        warmup=2,
        notes="idle machine; warm-up includes compilation",
    )
    k = ("model", "benchmark", "implementation", "ours", "batch", "img_size", "median_ms", "peer_over_ours")
    comp = []
    for model, bench, size, eager, compiled, ratio in (
        ("vit_small_patch16_224", "vit_small_patch16_224 code train step (B=4, 64px)", "64x64", 96.7, 94.9, 1.02),
        ("sasa_resnet26_cifar", "sasa_resnet26_cifar train step (B=4, 32px)", "32x32", 263.4, 280.4, 0.94),
        ("detr_tiny_prenorm", "detr_tiny_prenorm train step, surrogate loss (B=4, 64px)", "64x64", 25.0, 21.8, 1.15),
        (
            "sagan_32",
            "SA-GAN gan_step (D step, G step, EMA), sagan_shapes.yaml widths (B=4, 32px)",
            "32x32",
            54.1,
            43.9,
            1.23,
        ),
    ):
        comp += rows(
            c,
            (model, bench, "eager", False, 4, size, eager, ratio),
            (model, bench, "compiled (inductor)", True, 4, size, compiled, ""),
            keys=k,
        )
    write_results("compiled", comp, OUT, key=("benchmark",))
    c = dict(
        machine=EPYC,
        date="2026-12-02",
        commit="3b142d6",
        device="cpu",
        dtype="float32",
        threads=1,
        torch="2.14.1",
        repeats=3,
        batch=4,
        channels=64,
        notes="idle; each peak alone in a fresh process, glibc returning freed blocks; peers share our parameters",
    )
    k = (
        "model",
        "attention",
        "img_size",
        "implementation",
        "ours",
        "median_ms",
        "peer_over_ours",
        "peak_mib",
        "memory_peer_over_ours",
    )
    pix = []
    for side, o_ms, o_mib, p_ms, p_t, p_mib, p_m in (
        (16, 2.7, 4, 3.0, 1.11, 5, 1.5),
        (32, 29.9, 8, 44.8, 1.51, 52, 6.2),
        (64, 391.4, 27, 735.7, 1.88, 779, 28.5),
        (96, 1959.9, 59, 4210.0, 2.16, 3909, 66.6),
    ):
        pix += rows(
            c,
            ("NonLocalBlock2d", "global", f"{side}x{side}", "NonLocalBlock2d (fused SDPA)", True, o_ms, "", o_mib, ""),
            (
                "NonLocalBlock2d",
                "global",
                f"{side}x{side}",
                "materialised softmax(QK^T)V (SAGAN ports)",
                False,
                p_ms,
                p_t,
                p_mib,
                p_m,
            ),
            keys=k,
        )
    for side, o_ms, o_mib, p_ms, p_t, p_mib, p_m in (
        (32, 78.6, 82, 340.7, 4.33, 216, 2.6),
        (64, 341.1, 325, 1370.7, 4.03, 861, 2.7),
        (128, 1554.8, 1292, 6867.1, 4.42, 3443, 2.7),
    ):
        pix += rows(
            c,
            (
                "LocalSelfAttention2d",
                "local k=7",
                f"{side}x{side}",
                "LocalSelfAttention2d (blocks + halo)",
                True,
                o_ms,
                "",
                o_mib,
                "",
            ),
            (
                "LocalSelfAttention2d",
                "local k=7",
                f"{side}x{side}",
                "unfold k x k keys/values (SASA ports)",
                False,
                p_ms,
                p_t,
                p_mib,
                p_m,
            ),
            keys=k,
        )
    for r in pix:
        r["benchmark"] = f"{r['attention']} pixel attention fwd+bwd {r['img_size']} (B=4, C=64)"
    write_results("pixel", pix, OUT, key=("benchmark",))
    c = dict(
        machine=EPYC,
        date="2026-12-02",
        commit="3d7f233",
        device="cpu",
        dtype="float32",
        threads=1,
        repeats=5,
        batch=4,
        channels=64,
        model="LocalSelfAttention2d",
        notes="one layer, 7x7, 8 heads, d=8; each peak alone in a fresh process; ratios are x halo",
    )
    k = ("pass", "img_size", "implementation", "ours", "median_ms", "time_over_halo", "peak_mib", "memory_over_halo")
    ker = []
    for ps, side, h_ms, h_mib, unf, flex in (
        ("fwd+bwd", 8, 6.3, 7, (17.1, 2.63, 2.0), None),
        ("fwd+bwd", 32, 82.8, 82, (338.5, 3.97, 2.6), None),
        ("fwd+bwd", 56, 266.0, 248, (916.7, 3.43, 2.7), None),
        ("forward", 8, 2.0, 3, (4.3, 2.09, 4.5), (2.1, 1.03, 0.2)),
        ("forward", 32, 24.9, 47, (161.5, "6.50", 4.5), (122.2, 4.90, 0.2)),
        ("forward", 56, 98.7, 145, (388.8, 3.96, 4.5), (648.7, 6.65, 0.2)),
    ):
        size = f"{side}x{side}"
        ker += rows(
            c,
            (ps, size, "halo", True, h_ms, "", h_mib, ""),
            (ps, size, "unfold", False, unf[0], unf[1], "", unf[2]),
            keys=k,
        )
        ker += rows(
            c, (ps, size, "flex", False, *((flex[0], flex[1], "", flex[2]) if flex else ("", "", "", ""))), keys=k
        )
        if not flex:
            ker[-1]["notes"] = "no CPU backward (FlexAttention, torch 2.14)"
    for r in ker:
        r["benchmark"] = f"local 7x7 kernels {r['pass']} {r['img_size']} (B=4, C=64)"
    write_results("kernels", ker, OUT, key=("benchmark",))
    c = dict(
        machine=XEON25,
        date="2026-11-21",
        commit="fcb7b6b",
        img_size="32x32",
        train_images=9000,
        notes="nearly idle (a short test run overlapped about a minute); tools/demo.py with the shipped configs",
    )
    k = ("model", "config", "params", "epochs", "train_s", "top1", "top5")
    write_results(
        "demo",
        rows(
            c,
            ("vit_nano_patch4_32", "quickstart.yaml", "0.55M", 4, 186, 90.5, 99.8),
            ("resnet10_narrow_cifar", "quickstart_resnet.yaml", "0.32M", 2, 95, 99.6, 100.0),
            (
                "nonlocal_resnet18_cifar",
                "quickstart_nonlocal.yaml (widths 16-128, stride-2 stem)",
                "0.32M",
                3,
                44,
                99.4,
                100.0,
            ),
            keys=k,
        ),
        OUT,
        key=("model",),
    )
    # the study's journal as committed before this move (docs/data_size_study_results.csv at 0bb54c6)
    text = subprocess.run(
        ["git", "show", "0bb54c6:docs/data_size_study_results.csv"], capture_output=True, text=True, check=True
    ).stdout
    if text:
        cells = list(csv.DictReader(io.StringIO(text)))
        for r in cells:
            r.update(
                gflops="",
                img_size="32x32",
                throughput=r["images_per_second"],
                date="2026-12-02",
                commit=r["code_version"].rsplit("+", 1)[-1],
                machine=XEON,
                notes="loaded 2-core Xeon (load 5-8), 2 cells at a time, 1 torch thread each",
            )
        write_results("data_size_quick", cells, OUT, key=("model", "fraction", "seed"))
    c = dict(
        machine=XEON,
        date="2026-12-02",
        commit="e150d77",
        model="",
        img_size="32x32",
        threads=1,
        seed=99,
        notes="pilot before the design was committed; load 9-13 from other jobs (~12% of a core per cell)",
    )
    k = ("model", "cell", "n_train", "steps", "train_s", "wall_s", "throughput", "top1")
    write_results(
        "data_size_pilot",
        rows(
            c,
            ("resnet10_narrow_cifar", "fraction 1.0", 4500, 700, 771, 833, 58, 50.2),
            ("vit_nano_patch4_32", "fraction 0.4", 1800, 280, 497, "", 36, 51.0),
            keys=k,
        ),
        OUT,
        key=("model",),
    )
    c = dict(
        machine="cpu2-unrecorded",
        date="2026-11-21",
        commit="cf81fe2",
        model="detr_tiny_prenorm",
        img_size="60-80 px",
        config="detr_shapes.yaml",
        threads=2,
        notes="the architecture configured on detr_resnet18_small before it was registered as detr_tiny_prenorm; "
        "'this 2-core CPU' (machine not named), shared, load 1.3-4",
    )
    k = ("epoch", "steps", "minutes", "val_ap50", "val_ap")
    curve = rows(
        c,
        (0, 187, 1.1, 0.022, 0.005),
        (2, 561, 3.3, "0.280", 0.077),
        (4, 935, 5.7, 0.502, 0.177),
        (8, 1683, 11.1, "0.650", 0.228),
        (12, 2431, 15.5, 0.872, 0.476),
        ("16 (partial)", 3123, 20.1, 0.906, 0.499),
        keys=k,
    )
    write_results("detr_shapes", curve, OUT, key=("model", "epoch"))
    c = dict(
        machine=EPYC,
        date="2026-12-02",
        commit="1d4ae66",
        threads=1,
        img_size="60-80 px",
        max_time="00:00:12:00",
        notes="both run side by side, 1 thread each; one run each, one seed; 187 steps per epoch",
    )
    trunks = []
    for trunk, model, config, points in (
        (
            "ResNet (test_resnet)",
            "detr_tiny_prenorm",
            "detr_shapes.yaml",
            [
                (0, 0.012),
                (2, 0.135),
                (4, 0.419),
                (6, 0.651),
                (8, 0.666),
                (10, 0.756),
                (12, 0.885),
                (13, 0.895),
                (19, 0.928),
            ],
        ),
        (
            "ViT (vit_nano_patch4_32 code, 8-px patches)",
            "detr_tiny_prenorm",
            "detr_shapes_vit.yaml",
            [(0, 0.016), (2, 0.045), (4, 0.269), (6, 0.476), (8, 0.588), (10, 0.696), (12, 0.816), (13, 0.819)],
        ),
    ):
        for epoch, ap50 in points:
            trunks.append(dict(c, model=model, trunk=trunk, config=config, epoch=epoch, val_ap50=ap50, val_ap=""))
        trunks[-1]["val_ap"] = 0.521 if config == "detr_shapes.yaml" else 0.497
    write_results("detr_trunks", trunks, OUT, key=("config", "epoch"))
    k = ("date", "commit", "run", "g_steps", "generator", "accuracy", "worst_class", "fid", "kid", "is", "per_class")
    shipped = (
        "circle 98, ring 99, square 96, square frame 93, diamond 93, triangle 100, plus 98, x-cross 93, "
        "horizontal bar 99, vertical bar 99"
    )
    earlier = (
        "circle 95, ring 96, square 97, square frame 94, diamond 96, triangle 97, plus 94, x-cross 92, "
        "horizontal bar 100, vertical bar 98"
    )
    c = dict(
        model="sagan_32",
        machine=XEON,
        img_size="32x32",
        config="sagan_shapes.yaml",
        notes="2,000 generated vs 2,000 test images; features of the quickstart classifier (not Inception); one seed",
    )
    gan = rows(
        c,
        (
            "2026-12-02",
            "8f6f7f3",
            "SAGAN's official attention, recipe as shipped (idle, 2 threads, 5.1 min)",
            3000,
            "EMA",
            96.8,
            "square frame, diamond, x-cross 93%",
            0.79,
            0.008,
            6.73,
            shipped,
        ),
        (
            "2026-12-02",
            "8f6f7f3",
            "SAGAN's official attention, recipe as shipped (idle, 2 threads, 5.1 min)",
            3000,
            "trained",
            84.6,
            "x-cross 57%",
            2.63,
            0.042,
            5.13,
            "",
        ),
        (
            "2026-12-02",
            "0aca30f",
            "official attention, stopped at 2,057 G steps (1 thread, loaded, 26 min)",
            2057,
            "EMA",
            93.2,
            "diamond 84%, x-cross 85%, triangle 89%",
            0.83,
            0.007,
            6.44,
            "",
        ),
        (
            "2026-12-02",
            "0aca30f",
            "official attention, stopped at 2,057 G steps (1 thread, loaded, 26 min)",
            2057,
            "trained",
            85.8,
            "diamond 49%",
            "2.60",
            "0.040",
            5.93,
            "",
        ),
        (
            "2026-11-22",
            "c794464",
            "earlier attention (1/sqrt(d), no pooling, SN embedding)",
            2057,
            "EMA",
            95.9,
            "x-cross 92%",
            0.46,
            0.003,
            6.16,
            earlier,
        ),
        (
            "2026-11-22",
            "c794464",
            "earlier attention (1/sqrt(d), no pooling, SN embedding)",
            2057,
            "trained",
            86.9,
            "circle 60%",
            2.42,
            0.041,
            4.91,
            "",
        ),
        (
            "2026-11-21",
            "5cf3142",
            "previous recipe (G 32 ch everywhere, lr 2e-4/4e-4, EMA 0.999, NCHW)",
            1405,
            "trained",
            49.7,
            "x-cross 0%",
            5.77,
            0.061,
            "3.60",
            "",
        ),
        keys=k,
    )
    write_results("sagan_shapes", gan, OUT, key=("run", "generator"))
    c = dict(
        model="sagan_32",
        machine=XEON,
        date="2026-11-22",
        commit="c794464",
        img_size="32x32",
        notes="two runs at a time, one thread each (machine: the 2-core Xeon of the same commit's gan benchmark); "
        "EMA accuracy on 50 generated images per class",
    )
    k = ("change", "s_per_g_step", "ema_accuracy_600_900_1200_1500")
    write_results(
        "sagan_recipe_search",
        rows(
            c,
            ("none (lr 2e-4 / 4e-4, G and D 32 channels everywhere)", 0.63, "22% / 28% / 33% / 49%"),
            ("lr 5e-4 / 1e-3", 0.63, "29% / 48% / 71% / 88%"),
            ("lr 1e-3 / 2e-3", 0.64, "10% at 600 (stopped)"),
            ("lr 5e-4 / 1e-3, G 64-64-32-16, D 16-32-64-64 (adopted)", "0.60", "38% / 80% / 90% / 96% (95% at 2,000)"),
            ("lr 5e-4 / 1e-3, G 128-64-32-16, D 16-32-64-128", 0.78, "51% at 600 (stopped: slower per second)"),
            keys=k,
        ),
        OUT,
        key=("change",),
    )
    c = dict(machine="any", date="2026-12-02", notes="mutant counts do not depend on the machine; seed 0")
    k = ("model", "commit", "mutants", "before", "after")
    write_results(
        "mutation",
        rows(
            c,
            ("attention/core.py", "ab59a92", 100, "86/98 (87.8%)", "98/98 (100%)"),
            ("losses/set_criterion.py + losses/matcher.py", "ab59a92", 100, "72/98 (73.5%)", "98/98 (100%)"),
            ("layers/pixel_attention.py", "ab59a92", 100, "86/99 (86.9%)", "99/99 (100%)"),
            ("run/data_size/journal.py", "3ed967f", 60, "45/58 (77.6%)", "58/58 (100%)"),
            ("models/checkpoint.py", "3ed967f", 60, "38/56 (67.9%)", "56/56 (100%)"),
            ("run/resume.py", "3ed967f", 60, "35/57 (61.4%)", "57/57 (100%)"),
            ("callbacks/predictions.py", "3ed967f", 60, "33/55 (60.0%)", "55/55 (100%)"),
            ("layers/spectral_norm.py", "6a3322a", 58, "42/58 (72.4%)", "52/52 (100%; 6 equivalents)"),
            keys=k,
        ),
        OUT,
        key=("model",),
    )


if __name__ == "__main__":
    main()
