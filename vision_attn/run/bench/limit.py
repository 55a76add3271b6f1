"""The ``limit`` subcommand: how close each family gets to the machine. For every family (ViT-S/16, SASA-26,
non-local R18-CIFAR, DETR-R50, SA-GAN) x (training step, inference): the FLOPs of the step (counted by
``torch.utils.flop_counter``), its time, the achieved FLOP/s and the fraction of the machine's matmul peak of the
same dtype, timed interleaved with the step in the same process; the same for the peer (timm / transformers) where
one exists. On a GPU the fraction is MFU against the measured peak (the datasheet figure is printed beside it).

What the counter counts: matmuls, convolutions (forward and backward) and the attention kernels it knows. It misses
PyTorch's fused CPU attention kernel (``_scaled_dot_product_flash_attention_for_cpu``): :data:`EXTRA_FLOPS` counts
it with the counter's own SDPA formulas. It never counts pointwise ops, normalisation, softmax outside SDPA,
pooling, embedding look-ups or the optimizer: each row lists the op kinds its step ran that went uncounted.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

import vision_attn

from .harness import (
    Implementation,
    autocast,
    classifier_train_step,
    measure,
    prepare,
    summarize,
    table,
    write_json,
)

__all__ = [
    "EXTRA_FLOPS",
    "FAMILIES",
    "count_flops",
    "limit",
    "limit_table",
    "matmul_peak",
    "measure_limit",
    "model_flops_step",
    "write_csv",
]

MODES = ("train", "inference")
# Dense bf16 datasheet figures (TFLOP/s), printed beside the measured peak on a GPU.
DATASHEET_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "B200": 2250.0}


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# The counter's formulas for the ops it misses (it passes each argument's shape, as to its own formulas).
EXTRA_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


class _OpKinds(TorchDispatchMode):
    """Records every aten op kind a block of code runs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Set[object] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket)
        return func(*args, **(kwargs or {}))


def count_flops(step: Callable[[], object]) -> Tuple[int, List[str]]:
    """``(FLOPs of one call of step, the op kinds it ran that the counter does not count)`` (sorted names, views and
    metadata ops included only if they compute: ``aten.view`` and the like are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FLOPS)
    kinds = _OpKinds()
    with counter, kinds:
        step()
    counted = set(counter.flop_registry)
    free = (
        "view",
        "_unsafe_view",
        "t",
        "transpose",
        "permute",
        "expand",
        "unsqueeze",
        "squeeze",
        "slice",
        "select",
        "detach",
        "alias",
        "_to_copy",
        "empty",
        "empty_like",
        "empty_strided",
        "zeros",
        "zeros_like",
        "ones",
        "as_strided",
        "split",
        "split_with_sizes",
        "unbind",
        "chunk",
        "lift_fresh",
        "clone",
        "copy_",
        "_reshape_alias",
        "unfold",
        "new_empty",
        "new_empty_strided",
        "new_zeros",
        "new_ones",
        "fill_",
        "zero_",
        "arange",
        "scalar_tensor",
        "_local_scalar_dense",
        "item",
        "is_nonzero",
        "reshape",
        "contiguous",
        "_has_compatible_shallow_copy_type",
        "_record_function_enter_new",
        "_record_function_exit",
    )
    missed = sorted({op.__name__ for op in kinds.ops if op not in counted} - set(free))
    return int(counter.get_total_flops()), missed


def matmul_peak(bench: str, device: torch.device, dtype: torch.dtype) -> Tuple[Implementation, int]:
    """``(step, FLOPs of one step)``: square matmuls of ``dtype``, the fastest dense work the machine does: 1024 x 1024
    once on CPU, 8192 x 8192 ten times on CUDA (so one timing is milliseconds, not microseconds)."""
    n, reps = (8192, 10) if device.type == "cuda" else (1024, 1)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device, dtype) for _ in range(2))

    def step() -> Tensor:
        for _ in range(reps):
            out = a @ b
        return out

    return Implementation(bench, f"matmul peak ({n}x{n} {str(dtype).replace('torch.', '')})", step), 2 * n**3 * reps


@dataclass
class Family:
    """A family's benchmark: ``build(mode, batch, size, device, dtype, seed) -> implementations`` (ours first)."""

    key: str
    title: str
    build: Callable[..., List[Implementation]]
    cpu: Tuple[int, Tuple[int, int]]  # (batch, (H, W)) on CPU
    cuda: Tuple[int, Tuple[int, int]]
    toy: Tuple[int, Tuple[int, int]]


def _classifier(name: str, peer: Optional[str], classes: int = 1000, **kwargs) -> Callable[..., List[Implementation]]:
    """Builder of a registered classifier's step (train: cross-entropy, backward, AdamW; inference: no grad) and of
    timm's ``peer`` (a CNN of the same depth where timm has no model of our name), same init seed."""

    def build(mode, batch, size, device, dtype, seed) -> List[Implementation]:
        import timm

        bench = f"{name} {mode} (B={batch}, {size[0]}x{size[1]})"
        torch.manual_seed(seed)
        images = torch.randn(batch, 3, *size, device=device)
        labels = torch.randint(0, classes, (batch,), device=device)
        extra = {"img_size": size[0]} if name.startswith("vit_") else {}
        builders = [
            (
                f"vision_attn {name}",
                lambda: vision_attn.create_model(name, num_classes=classes, **extra, **kwargs),
                True,
            )
        ]
        if peer:
            builders.append(
                (f"timm {peer}", lambda: timm.create_model(peer, pretrained=False, num_classes=classes, **extra), False)
            )
        impls = []
        for label, make, ours in builders:
            torch.manual_seed(seed)
            model = make().to(device).train(mode == "train")
            step = _step(model, mode, images, labels, device, dtype)
            impls.append(Implementation(bench, label, step, ours=ours, count=model_flops_step(model, step)))
        return impls

    return build


def model_flops_step(model: nn.Module, step: Callable[[], object]) -> Optional[Callable[[], object]]:
    """For a model with :class:`~vision_attn.layers.LocalSelfAttention2d` layers: ``step`` run with their ``unfold``
    kernel, which computes the definition and nothing more (each pixel's k x k keys, head size ``d``), so its count
    is the model's FLOPs whatever kernel is timed (the ``halo`` kernel also multiplies masked keys and padding:
    counting those would score wasted work as speed). ``None`` for other models (their step counts as it runs)."""
    from vision_attn.layers import LocalSelfAttention2d

    layers = [m for m in model.modules() if isinstance(m, LocalSelfAttention2d)]
    if not layers:
        return None

    def exact_windows() -> object:
        backends = [m.backend for m in layers]
        for m in layers:
            m.backend = "unfold"
        try:
            return step()
        finally:
            for m, backend in zip(layers, backends):
                m.backend = backend

    return exact_windows


def _step(model: nn.Module, mode: str, images: Tensor, labels: Tensor, device, dtype) -> Callable[[], Tensor]:
    if mode == "train":
        return classifier_train_step(model, model, images, labels, device, dtype)

    def infer() -> Tensor:
        with torch.inference_mode(), autocast(device, dtype):
            return model(images)

    return infer


def _detr(mode, batch, size, device, dtype, seed) -> List[Implementation]:
    from .detr import detr_implementations

    return detr_implementations(mode, batch, size, device, dtype, seed)


def _gan(mode, batch, size, device, dtype, seed) -> List[Implementation]:
    """The SA-GAN shapes quickstart (``configs/sagan_shapes.yaml``): ``gan_step`` (D step, G step, EMA) or sampling
    a batch from the EMA generator, channels-last (the recipe's layout, ours) vs the default layout."""
    from vision_attn.tasks import GenerationTask

    from .gan import gan_implementations, gan_task_args

    if mode == "train":
        return sorted(gan_implementations(batch, device, dtype, seed), key=lambda i: not i.ours)
    init = gan_task_args("configs/sagan_shapes.yaml")
    impls = []
    for channels_last in (True, False):
        torch.manual_seed(seed)
        task = GenerationTask(**{**init, "num_classes": 10, "channels_last": channels_last}).to(device).eval()
        if channels_last:
            task.model.to(memory_format=torch.channels_last)
        z = torch.randn(batch, task.model.z_dim, device=device)
        labels = torch.randint(0, 10, (batch,), device=device)

        def sample(task=task, z=z, labels=labels) -> Tensor:
            with torch.inference_mode(), autocast(device, dtype):
                return task(z, labels)

        bench = f"sagan_32 sample (B={batch}, {task.model.img_size}px)"
        impls.append(
            Implementation(
                bench, "channels-last" if channels_last else "default layout (NCHW)", sample, ours=channels_last
            )
        )
    return impls


FAMILIES = {
    "vit": Family(
        "vit",
        "ViT-S/16",
        _classifier("vit_small_patch16_224", "vit_small_patch16_224"),
        cpu=(2, (224, 224)),
        cuda=(128, (224, 224)),
        toy=(1, (32, 32)),
    ),
    "sasa": Family(
        "sasa",
        "SASA-26",
        _classifier("sasa_resnet26", "resnet26"),
        cpu=(2, (112, 112)),
        cuda=(64, (224, 224)),
        toy=(2, (32, 32)),
    ),
    "nonlocal": Family(
        "nonlocal",
        "non-local R18-CIFAR",
        _classifier("nonlocal_resnet18_cifar", "resnet18", classes=10),
        cpu=(16, (32, 32)),
        cuda=(256, (32, 32)),
        toy=(2, (32, 32)),
    ),
    "detr": Family("detr", "DETR-R50", _detr, cpu=(1, (320, 427)), cuda=(4, (800, 1066)), toy=(1, (64, 96))),
    "gan": Family("gan", "SA-GAN (shapes)", _gan, cpu=(32, (32, 32)), cuda=(256, (32, 32)), toy=(2, (32, 32))),
}


def measure_limit(
    impls: List[Implementation], repeats: int, warmup: int, device: torch.device, dtype: torch.dtype
) -> List[Dict[str, object]]:
    """Time ``impls`` and the matmul peak interleaved; rows with FLOPs, FLOP/s, the peak and the fraction (the median
    over repeats of step FLOP/s / peak FLOP/s of the same repeat, so load that drifts during the run cancels)."""
    peak, peak_flops = matmul_peak(impls[0].benchmark, device, dtype)
    counts = {impl.name: count_flops(impl.count or impl.step) for impl in impls}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    measure([*impls, peak], repeats, warmup, device, same_shapes=False)
    rows = summarize([*impls, peak])
    peak_rate = [peak_flops / t * 1e3 for t in peak.times_ms]
    for row, impl in zip(rows, impls):
        flops, missed = counts[impl.name]
        row.update(
            flops=flops,
            uncounted_ops=missed,
            load=load,
            flop_per_s=flops / row["median_ms"] * 1e3,
            peak_flop_per_s=statistics.median(peak_rate),
            fraction=statistics.median(flops / t * 1e3 / p for t, p in zip(impl.times_ms, peak_rate)),
        )
    rows[-1].update(
        flops=peak_flops,
        uncounted_ops=[],
        load=load,
        flop_per_s=statistics.median(peak_rate),
        peak_flop_per_s=statistics.median(peak_rate),
        fraction=1.0,
    )
    return rows


def limit_table(rows: Sequence[Dict[str, object]], datasheet_tflops: Optional[float] = None) -> str:
    """The markdown table: one line per family, mode and implementation (the matmul peak rows left out)."""
    columns = [
        ("family", "---"),
        ("mode", "---"),
        ("implementation", "---"),
        ("GFLOP/step", "---:"),
        ("ms", "---:"),
        ("GFLOP/s", "---:"),
        ("peak GFLOP/s", "---:"),
        ("fraction of peak", "---:"),
    ]
    if datasheet_tflops:
        columns.append(("of datasheet", "---:"))
    lines = []
    for r in rows:
        if r["implementation"].startswith("matmul peak"):
            continue
        line = [
            r["family"],
            r["mode"],
            r["implementation"],
            f"{r['flops'] / 1e9:.2f}",
            f"{r['median_ms']:.1f}",
            f"{r['flop_per_s'] / 1e9:.1f}",
            f"{r['peak_flop_per_s'] / 1e9:.1f}",
            f"{100 * r['fraction']:.1f}%",
        ]
        if datasheet_tflops:
            line.append(f"{100 * r['flop_per_s'] / (datasheet_tflops * 1e12):.1f}%")
        lines.append(line)
    return table(columns, lines)


def datasheet_tflops(machine: Dict[str, object]) -> Optional[float]:
    """The dense bf16 datasheet figure of the GPU, if it is one we know."""
    gpu = str(machine.get("gpu") or "")
    return next((v for k, v in DATASHEET_BF16_TFLOPS.items() if k in gpu), None)


CSV_COLUMNS = [
    "machine",
    "date",
    "commit",
    "family",
    "mode",
    "implementation",
    "batch",
    "size",
    "dtype",
    "threads",
    "gflop_per_step",
    "median_ms",
    "gflop_per_s",
    "peak_gflop_per_s",
    "fraction",
    "paired_peer_over_ours",
    "paired_ci95",
    "load_1min",
    "uncounted_ops",
]


def machine_slug(machine: Dict[str, object]) -> str:
    """A file-name-safe machine name: the GPU's, else ``cpu-<cores>core``."""
    if machine.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", str(machine["gpu"]).lower()).strip("-")
    return f"cpu-{os.cpu_count()}core"


def write_csv(
    rows: Sequence[Dict[str, object]],
    machine: Dict[str, object],
    out_dir: str = "results",
    commit: Optional[str] = None,
) -> Path:
    """Append ``rows`` (matmul peak rows left out) to ``out_dir/limit-<machine>.csv`` (header if new), one row per
    measurement with machine, date and commit (default: this checkout's HEAD); returns the path."""
    path = Path(out_dir) / f"limit-{machine_slug(machine)}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        commit = (
            commit
            or subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        commit = "unknown"
    if path.exists():  # a file written before a column was added: rewrite it with the column empty in old rows
        with path.open(newline="") as f:
            old = list(csv.DictReader(f))
        if old and list(old[0]) != CSV_COLUMNS:
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, CSV_COLUMNS, restval="")
                writer.writeheader()
                writer.writerows({c: r.get(c, "") for c in CSV_COLUMNS} for r in old)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        if new:
            writer.writeheader()
        for r in rows:
            if r["implementation"].startswith("matmul peak"):
                continue
            writer.writerow(
                {
                    "machine": machine_slug(machine),
                    "date": datetime.date.today().isoformat(),
                    "commit": commit,
                    "family": r["family"],
                    "mode": r["mode"],
                    "implementation": r["implementation"],
                    "batch": r["batch"],
                    "size": "x".join(map(str, r["size"])),
                    "dtype": r.get("dtype", ""),
                    "threads": machine["torch_threads"],
                    "gflop_per_step": f"{r['flops'] / 1e9:.3f}",
                    "median_ms": f"{r['median_ms']:.2f}",
                    "gflop_per_s": f"{r['flop_per_s'] / 1e9:.2f}",
                    "peak_gflop_per_s": f"{r['peak_flop_per_s'] / 1e9:.2f}",
                    "fraction": f"{r['fraction']:.4f}",
                    "paired_peer_over_ours": ""
                    if r["paired_peer_over_ours"] is None
                    else f"{r['paired_peer_over_ours']:.3f}",
                    "paired_ci95": "" if r.get("paired_ci95") is None else "{:.3f}-{:.3f}".format(*r["paired_ci95"]),
                    "load_1min": "" if r["load"] is None else f"{r['load']:.2f}",
                    "uncounted_ops": " ".join(r["uncounted_ops"]),
                }
            )
    return path


def limit(args: argparse.Namespace) -> Dict[str, object]:
    """Every chosen family x mode against the matmul peak; prints the table, returns (and with --json writes) it."""
    device, dtype, repeats, warmup, machine = prepare(args, "limit", cuda=(20, 5), cpu=(5, 1))
    sheet = datasheet_tflops(machine) if device.type == "cuda" else None
    rows: List[Dict[str, object]] = []
    for key in args.families:
        family = FAMILIES[key]
        batch, size = family.toy if args.toy else family.cuda if device.type == "cuda" else family.cpu
        for mode in args.modes:
            impls = family.build(mode, batch, size, device, dtype, args.seed)
            print(f"measuring {impls[0].benchmark} ...", file=sys.stderr, flush=True)
            for row in measure_limit(impls, repeats, warmup, device, dtype):
                rows.append(
                    {
                        "family": family.title,
                        "mode": mode,
                        "batch": batch,
                        "size": list(size),
                        "dtype": args.dtype,
                        **row,
                    }
                )
            del impls
            if device.type == "cuda":
                torch.cuda.empty_cache()
    sheet_note = f"; of datasheet = of the {sheet:.0f} TFLOP/s dense bf16 datasheet figure" if sheet else ""
    print(
        f"## limit: {machine['gpu'] or machine['cpu']} | {machine['torch_threads']} torch threads | torch "
        f"{machine['torch']} | {device.type} {args.dtype}\n{repeats} interleaved repeats after {warmup} warmup; "
        f"fraction = step FLOP/s / matmul FLOP/s of the same repeat (median){sheet_note}\n"
    )
    print(limit_table(rows, sheet))
    config = {
        "device": str(device),
        "dtype": args.dtype,
        "repeats": repeats,
        "warmup": warmup,
        "toy": args.toy,
        "families": list(args.families),
        "modes": list(args.modes),
        "datasheet_bf16_tflops": sheet,
    }
    result = {"machine": machine, "config": config, "results": rows}
    if args.json:
        write_json(result, args.json)
    if args.results:
        print(f"\nrows appended to {write_csv(rows, machine, args.results)}")
    return result


def add_parser(sub: argparse._SubParsersAction, add_common: Callable, add_tail: Callable) -> None:
    p = sub.add_parser(
        "limit", help="each family's fraction of the machine's matmul peak (MFU on a GPU), ours and peers'"
    )
    add_common(p, "default 5 on cpu, 20 on cuda", "default 1 on cpu, 5 on cuda")
    p.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument(
        "--toy", action="store_true", help="toy sizes (checks the command itself; the fractions mean little)"
    )
    p.add_argument("--results", metavar="DIR", default=None, help="also append the rows to DIR/limit-<machine>.csv")
    add_tail(p)
    p.set_defaults(func=limit)
