"""Time and peak memory of LocalSelfAttention2d's kernels (halo, unfold, flex), in one process, interleaved.

    python -m vision_attn.run.local_kernel_bench            # the SASA shapes, 1 thread, training and inference

Every kernel runs the same layer (same weights, same input) once per round, rounds interleaved so drifts of a
shared machine hit all alike; the table gives medians and each kernel's ratio to ``halo``. Peak memory is what one
call adds to the process's resident memory at its highest (everything: autograd's saved tensors, a fused or compiled
kernel's scratch), measured in a separate, untimed call (Linux).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..layers import LocalSelfAttention2d
from ..layers.local_kernels import flex_supported
from .bench.harness import libc as _libc, pin_malloc

__all__ = ["SASA_SHAPES", "pin_malloc", "peak_memory", "compare_local_kernels", "format_table"]

# (batch, channels, height, width, heads, kernel): sasa_resnet26_cifar's four stages at 32 px (batch 8), and the
# first stage of sasa_resnet26 at 224 px (56 x 56, batch 2).
SASA_SHAPES: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (8, 64, 32, 32, 8, 7),
    (8, 128, 16, 16, 8, 7),
    (8, 256, 8, 8, 8, 7),
    (8, 512, 4, 4, 8, 7),
    (2, 64, 56, 56, 8, 7),
)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def peak_memory(fn: Callable[[], None]) -> float:
    """Peak resident memory ``fn()`` adds, in bytes: the kernel's high-water mark (reset before the call) minus the
    resident size before it (Linux; call :func:`pin_malloc` first). NaN where ``/proc`` cannot tell."""
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident size
        base = _status_bytes("VmRSS:")
    except (OSError, RuntimeError):
        return float("nan")
    fn()
    return float(_status_bytes("VmHWM:") - base)


def _step(layer: torch.nn.Module, x: torch.Tensor, train: bool) -> None:
    if train:
        layer(x).square().mean().backward()
    else:
        with torch.no_grad():
            layer(x)


def compare_local_kernels(
    shapes: Sequence[Tuple[int, int, int, int, int, int]] = SASA_SHAPES,
    backends: Sequence[str] = ("halo", "unfold", "flex"),
    train: bool = True,
    rounds: int = 5,
    threads: Optional[int] = 1,
) -> List[Dict[str, object]]:
    """One row per shape and backend: ``ms`` (median of ``rounds``), ``peak_mib``, and ratios to ``halo``.

    Calls :func:`pin_malloc`: the process's later large allocations are each mapped on their own (slower): run it
    in a process of its own (the CLI does).
    """
    if threads:
        torch.set_num_threads(threads)
    pin_malloc()
    rows = []
    for B, C, H, W, heads, k in shapes:
        torch.manual_seed(0)
        base = LocalSelfAttention2d(C, k, heads, backend="halo")
        x = torch.randn(B, C, H, W, requires_grad=train)
        layers = {}
        for b in backends:
            if b == "flex" and not flex_supported(x.device, train):
                continue
            layers[b] = copy.deepcopy(base)
            layers[b].backend = b
            _step(layers[b], x, train)  # warm-up (flex compiles here)
        times: Dict[str, List[float]] = {b: [] for b in layers}
        for _ in range(rounds):
            for b, layer in layers.items():
                t0 = time.perf_counter()
                _step(layer, x, train)
                times[b].append(time.perf_counter() - t0)
        for b, layer in layers.items():
            peak = peak_memory(lambda: _step(layer, x, train))
            ms = 1e3 * statistics.median(times[b])
            rows.append(dict(shape=(B, C, H, W), heads=heads, kernel=k, head_dim=C // heads, backend=b,
                             train=train, ms=ms, peak_mib=peak / 2 ** 20))
        halo = next((r for r in rows[-len(layers):] if r["backend"] == "halo"), None)
        for r in rows[-len(layers):]:
            r["time_vs_halo"] = r["ms"] / halo["ms"] if halo else float("nan")
            r["mem_vs_halo"] = r["peak_mib"] / halo["peak_mib"] if halo and halo["peak_mib"] else float("nan")
    return rows


def format_table(rows: List[Dict[str, object]]) -> str:
    """A markdown table of :func:`compare_local_kernels`' rows."""
    lines = ["| pass | B, C, H, W | d | kernel | ms | time / halo | peak MiB | memory / halo |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        lines.append(f"| {'fwd+bwd' if r['train'] else 'fwd'} | {shape} | {r['head_dim']} | {r['backend']} | "
                     f"{r['ms']:.1f} | {r['time_vs_halo']:.2f} | {r['peak_mib']:.1f} | {r['mem_vs_halo']:.2f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--inference-only", action="store_true")
    args = p.parse_args(argv)
    for train in ([False] if args.inference_only else [True, False]):
        print(format_table(compare_local_kernels(train=train, rounds=args.rounds, threads=args.threads)), flush=True)


if __name__ == "__main__":
    main()
