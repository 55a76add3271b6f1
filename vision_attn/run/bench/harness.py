"""The timing harness every benchmark suite shares: contenders, machine, seeding, interleaved timing, tables, JSON.

Measurement: after warmup, every repeat times every implementation of a benchmark once, rotating the order each
repeat (so drift in clock speed or cache state hits all alike); CUDA is synchronised around each timing.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import platform
import random
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vision_attn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Implementation:
    """One contender of a benchmark: ``step()`` runs one timed step and returns its output (for the shape check)."""

    benchmark: str
    name: str
    step: Callable[[], Tensor]
    ours: bool = False
    # The step whose counted FLOPs are the model's (``limit``): default ``step``; a model whose kernel computes more
    # than its definition (the halo kernel's masked keys) counts through one that does not.
    count: Optional[Callable[[], object]] = None
    times_ms: List[float] = field(default_factory=list)
    peaks_mib: List[float] = field(default_factory=list)


# --- machine and setup ---------------------------------------------------------------------------


def machine_info(device: torch.device) -> Dict[str, object]:
    """What the numbers were measured on."""
    import timm

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info: Dict[str, object] = {
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "vision_attn": vision_attn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
    return info


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def autocast(device: torch.device, dtype: torch.dtype) -> ContextManager:
    """bfloat16 through autocast (weights stay float32, as in mixed-precision training); float32 as is."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()


def prepare(args: argparse.Namespace, name: str, cuda: Tuple[int, int], cpu: Tuple[int, int]):
    """The setup every benchmark shares: device check, dtype, (repeats, warmup) defaults per device, threads,
    seed and machine description. Returns ``(device, dtype, repeats, warmup, machine)``."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"benchmark.py {name}: --device cuda asked for, but torch.cuda.is_available() is False")
    dtype = DTYPES[args.dtype]
    default_repeats, default_warmup = cuda if device.type == "cuda" else cpu
    repeats = args.repeats if args.repeats is not None else default_repeats
    warmup = args.warmup if args.warmup is not None else default_warmup
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    return device, dtype, repeats, warmup, machine_info(device)


def libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def pin_malloc() -> None:
    """Tell glibc to map every block of 64 KiB or more on its own and to trim freed heap at once, so resident memory
    follows the live tensors (its default, adaptive threshold keeps freed blocks and hides later allocations)."""
    lib = libc()
    if lib is not None:
        lib.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
        lib.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD


# --- measurement ---------------------------------------------------------------------------------


def time_step(impl: Implementation, device: torch.device) -> None:
    """Time one step of ``impl``; on CUDA also the step's peak memory above what was allocated before it."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()
    impl.step()
    if cuda:
        torch.cuda.synchronize(device)
    impl.times_ms.append((time.perf_counter() - t0) * 1e3)
    if cuda:
        impl.peaks_mib.append((torch.cuda.max_memory_allocated(device) - before) / 2**20)


def measure(
    impls: Sequence[Implementation], repeats: int, warmup: int, device: torch.device, same_shapes: bool = True
) -> None:
    """Check that every output has our shape (unless not ``same_shapes``: e.g. a reference matmul timed beside),
    warm up, then time interleaved with a rotating order."""
    shapes = {impl.name: tuple(impl.step().shape) for impl in impls}  # one untimed step each
    ours = next(impl for impl in impls if impl.ours)
    for name, shape in shapes.items():
        if same_shapes and shape != shapes[ours.name]:
            raise RuntimeError(f"{impls[0].benchmark}: {name} gives output {shape}, ours gives {shapes[ours.name]}")
    for _ in range(warmup):
        for impl in impls:
            impl.step()
    for impl in impls:
        impl.times_ms.clear()
        impl.peaks_mib.clear()
    for r in range(repeats):
        k = r % len(impls)
        for impl in list(impls[k:]) + list(impls[:k]):
            time_step(impl, device)


def summarize(impls: Sequence[Implementation]) -> List[Dict[str, object]]:
    """Median, IQR and peer median / our median for each implementation of one benchmark."""
    ours_times = next(i for i in impls if i.ours).times_ms
    ours_median = statistics.median(ours_times)
    rows = []
    for impl in impls:
        t = impl.times_ms
        q1, _, q3 = statistics.quantiles(t, n=4, method="inclusive") if len(t) > 1 else (t[0], t[0], t[0])
        median = statistics.median(t)
        rows.append(
            {
                "benchmark": impl.benchmark,
                "implementation": impl.name,
                "ours": impl.ours,
                "median_ms": median,
                "iqr_ms": q3 - q1,
                "peer_over_ours": None if impl.ours else median / ours_median,
                # Median of the per-repeat ratios: timings of one repeat are neighbours, so this one
                # also cancels load that drifts during the run (e.g. a shared machine).
                "paired_peer_over_ours": None if impl.ours else statistics.median(p / o for p, o in zip(t, ours_times)),
                "paired_ci95": None if impl.ours else median_ci95([p / o for p, o in zip(t, ours_times)]),
                "peak_mib": max(impl.peaks_mib) if impl.peaks_mib else None,
                "times_ms": list(t),
            }
        )
    return rows


def median_ci95(values: Sequence[float]) -> Tuple[float, float]:
    """A distribution-free 95% confidence interval of the median of ``values``: the order statistics at ranks
    ``(n - 1.96 sqrt(n)) / 2`` and ``1 + (n + 1.96 sqrt(n)) / 2`` (binomial, normal approximation; the whole range
    below 6 values)."""
    xs = sorted(values)
    n = len(xs)
    lo = max(math.floor((n - 1.96 * n**0.5) / 2), 1)
    hi = min(math.ceil(1 + (n + 1.96 * n**0.5) / 2), n)
    return xs[lo - 1], xs[hi - 1]


# --- shared steps and output ---------------------------------------------------------------------


def forward_backward_step(
    module: nn.Module,
    forward: Callable[[nn.Module, Tensor], Tensor],
    x: Tensor,
    grad: Tensor,
    device: torch.device,
    dtype: torch.dtype,
) -> Callable[[], Tensor]:
    """One ``forward(module, x)`` under autocast and a backward of the fixed output gradient ``grad`` (shaped as the
    output), the gradients of ``module`` and of the leaf input ``x`` cleared first; returns the step."""

    def step() -> Tensor:
        x.grad = None
        module.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = forward(module, x)
        out.backward(grad)
        return out

    return step


def classifier_train_step(
    model: nn.Module, fwd: nn.Module, images: Tensor, labels: Tensor, device: torch.device, dtype: torch.dtype
) -> Callable[[], Tensor]:
    """One classifier training step (forward through ``fwd`` — the model or its compiled wrapper — cross-entropy,
    backward, AdamW on ``model``'s parameters); returns the step, which returns the logits."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)

    def step() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            logits = fwd(images)
            loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        return logits

    return step


def table(columns: Sequence[Tuple[str, str]], lines: Iterable[Sequence[object]]) -> str:
    """A markdown table: ``columns`` are ``(title, alignment)`` pairs (``"---"`` or ``"---:"``), one row per line."""
    rows = [[title for title, _ in columns], [align for _, align in columns]] + [list(cells) for cells in lines]
    return "\n".join("| " + " | ".join(map(str, cells)) + " |" for cells in rows)


def ratio_cell(row: Dict[str, object], key: str, spec: str = ".2f") -> str:
    """A peer/ours ratio for the table: ``ours`` on our row, ``n/a`` where it could not be measured."""
    return "ours" if row["ours"] else ("n/a" if row[key] is None else format(row[key], spec))


def peak_cell(row: Dict[str, object]) -> str:
    return "n/a" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"


def markdown_table(rows: Sequence[Dict[str, object]]) -> str:
    columns = [
        ("benchmark", "---"),
        ("implementation", "---"),
        ("median ms", "---:"),
        ("IQR ms", "---:"),
        ("peer/ours", "---:"),
        ("peak MiB", "---:"),
    ]
    return table(
        columns,
        (
            [
                r["benchmark"],
                r["implementation"],
                f"{r['median_ms']:.1f}",
                f"{r['iqr_ms']:.1f}",
                ratio_cell(r, "peer_over_ours"),
                peak_cell(r),
            ]
            for r in rows
        ),
    )


def write_json(result: Dict[str, object], path: str) -> None:
    """Machine, config and results as indented JSON (``--json PATH``)."""
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
