"""Pixel-level self-attention, forward + backward of one layer on ``(B=4, C=64, S, S)`` maps, time and peak memory,
ours against the naive peer with the same parameters (checked to give the same output):

* global (``NonLocalBlock2d``, S = 16, 32, 64, 96) vs softmax(QK^T)V materialised as SAGAN ports do;
* local 7x7 (``LocalSelfAttention2d``, 8 heads, S = 32, 64, 128) vs unfolding every pixel's 7x7 keys and
  values, as SASA ports do; and how each one's peak memory grows with the pixels (linear: x4 pixels, ~x4);
* ``kernels`` / ``kernels-inference``: ``LocalSelfAttention2d``'s own kernels on one layer (7x7, 8 heads, S = 8, 32,
  56): ``halo`` (blocked queries + halo through the fused SDPA; what ``backend="auto"`` runs) against ``unfold`` and
  ``flex`` (the core's FlexAttention with a neighbourhood block mask), fwd+bwd and forward alone; each checked to
  equal ``halo`` first (float32). FlexAttention has no CPU backward: on CPU ``flex`` is in the forward table only.
  ``--kernel-shapes sasa`` runs them on ``sasa_resnet26``'s own layer shapes instead (:data:`SASA_SHAPES`).

On CPU each peak is measured alone, in a fresh process (the resident memory one step adds at its peak).
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .harness import (
    DTYPES,
    Implementation,
    autocast,
    forward_backward_step,
    libc,
    measure,
    peak_cell,
    pin_malloc,
    prepare,
    ratio_cell,
    summarize,
    table,
    write_json,
)


class MaterialisingNonLocal(nn.Module):
    """The peer of ``NonLocalBlock2d``: what SAGAN ports run, softmax(QK^T) materialised as ``(B, H, N, N)`` then
    multiplied by V, with the same block's parameters. The weights come from the core's
    ``attention_weights`` (the weights path), so there is still one softmax(QK^T) in the project."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def heads(self, t: Tensor) -> Tensor:
        """``(B, c, h, w)`` -> ``(B, heads, h*w, c / heads)``, the ports' head split."""
        B, c, h, w = t.shape
        nh = self.block.num_heads
        return t.reshape(B, nh, c // nh, h * w).transpose(-1, -2)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C, H, W)`` -> ``(B, C, H, W)``."""
        from vision_attn.attention import attention_weights

        b = self.block
        B, _, H, W = x.shape
        q, k, v = self.heads(b.query(x)), self.heads(b.pool(b.key(x))), self.heads(b.pool(b.value(x)))
        out = torch.matmul(attention_weights(q, k, scale=b.scale), v)  # (B, heads, N, N) @ (B, heads, N, dv)
        return x + b.gamma * b.out_proj(out.transpose(-1, -2).reshape(B, -1, H, W))


class UnfoldLocalAttention(nn.Module):
    """The peer of ``LocalSelfAttention2d``: the usual port, which unfolds every pixel's k x k keys and values
    (``(B, C, k*k, H*W)`` each) and adds the relative embeddings to the keys; same parameters, same border
    masking, attention through the core's function on ``(B, heads, N, 1, k*k)`` slices."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, C, H, W)`` -> ``(B, C, H, W)`` (halved by a stride-2 block's pool)."""
        from vision_attn.attention import scaled_dot_product_attention

        m = self.block
        B, C, H, W = x.shape
        nh, d, k = m.num_heads, m.head_dim, m.kernel_size
        n, kk = H * W, k * k
        q, key, v = m.qkv(x).chunk(3, dim=1)
        q = q.reshape(B, nh, d, n, 1).permute(0, 1, 3, 4, 2)  # (B, heads, N, 1, d)

        def unfold(t: Tensor) -> Tensor:  # (B, C, H, W) -> (B, heads, N, k*k, d)
            return F.unfold(t, k, padding=k // 2).view(B, nh, d, kk, n).permute(0, 1, 4, 3, 2)

        rel = torch.cat([m.rel_pos_h[:, :, None].expand(-1, -1, k, -1), m.rel_pos_w[:, None].expand(-1, k, -1, -1)], -1)
        key = unfold(key) + rel.reshape(nh, 1, kk, d)
        inside = F.unfold(torch.ones(1, 1, H, W, device=x.device, dtype=x.dtype), k, padding=k // 2) > 0  # (1, k*k, N)
        out = scaled_dot_product_attention(
            q, key, unfold(v), inside.transpose(1, 2)[:, None, :, None, :], scale=d**-0.5
        )
        return m.pool(out.reshape(B, nh, n, d).permute(0, 1, 3, 2).reshape(B, C, H, W))


def pixel_modules(kind: str, channels: int, seed: int, device: torch.device) -> Dict[str, nn.Module]:
    """Ours and the peer, sharing one set of parameters; the peer is checked to compute the same function."""
    from vision_attn.layers import LocalSelfAttention2d, NonLocalBlock2d

    torch.manual_seed(seed)
    if kind == "global":
        ours: nn.Module = NonLocalBlock2d(channels).to(device)
        with torch.no_grad():
            ours.gamma.fill_(1.0)  # at 0 the attention would not reach the output
        peer: nn.Module = MaterialisingNonLocal(ours)
    else:
        ours = LocalSelfAttention2d(channels, kernel_size=7, num_heads=8).to(device)
        peer = UnfoldLocalAttention(ours)
    x = torch.randn(2, channels, 9, 13, device=device)  # odd, non-square: borders everywhere
    with torch.no_grad():
        torch.testing.assert_close(peer(x), ours(x), rtol=1e-4, atol=1e-4)
    return {"ours": ours.train(), "peer": peer.train()}


PIXEL_NAMES = {
    "global": ("vision_attn NonLocalBlock2d (fused SDPA)", "materialised softmax(QK^T)V (SAGAN ports)"),
    "local": ("vision_attn LocalSelfAttention2d k=7 (blocked + halo)", "unfold k x k keys/values (SASA ports)"),
}
KERNEL_KINDS = ("kernels", "kernels-inference")
KERNEL_BACKENDS = ("halo", "unfold", "flex")  # halo first: what backend="auto" runs, the ratios' reference
# (batch, channels, size) of the kernels tables for --kernel-shapes sasa: sasa_resnet26_cifar's four stages at 32 px
# (batch 8), and the first stage of sasa_resnet26 at 224 px (56 x 56, batch 2).
SASA_SHAPES = ((8, 64, 32), (8, 128, 16), (8, 256, 8), (8, 512, 4), (2, 64, 56))


def kernel_implementations(
    kind: str, size: int, batch: int, channels: int, device: torch.device, dtype: torch.dtype, seed: int
) -> List[Implementation]:
    """One ``LocalSelfAttention2d`` (7x7, 8 heads) run by each of its kernels on ``(batch, channels, size, size)``:
    fwd+bwd (``kind="kernels"``) or forward alone (``"kernels-inference"``); ``halo`` is ours. Each kernel is first
    checked to give ``halo``'s output on this input (float32). ``flex`` is left out where FlexAttention cannot run
    the pass (no CPU backward); a kernel whose forward raises here (one this device or dtype lacks) is left out
    with a printed line naming it and why, so the others are still measured."""
    from vision_attn.layers import LocalSelfAttention2d
    from vision_attn.layers.local_kernels import flex_supported

    train = kind == "kernels"
    torch.manual_seed(seed)
    base = LocalSelfAttention2d(channels, kernel_size=7, num_heads=8, backend="halo").to(device)
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=train)
    grad = torch.randn(batch, channels, size, size, device=device)
    bench = f"local 7x7 kernels {'fwd+bwd' if train else 'forward'} {size}x{size} (B={batch}, C={channels})"
    impls: List[Implementation] = []
    for backend in KERNEL_BACKENDS:
        if backend == "flex" and not flex_supported(device, needs_grad=train):
            continue
        layer = copy.deepcopy(base).train(train)
        layer.backend = backend
        try:
            with torch.no_grad(), autocast(device, dtype):
                out = layer(x)
        except (NotImplementedError, RuntimeError) as err:  # e.g. a kernel this device or dtype lacks
            print(f"{bench}: backend={backend} left out: {type(err).__name__}: {str(err).splitlines()[0]}", flush=True)
            continue
        if dtype == torch.float32:
            with torch.no_grad():
                torch.testing.assert_close(
                    out, base(x), rtol=1e-4, atol=1e-4, msg=lambda m, b=backend: f"{bench}: {b} differs from halo: {m}"
                )
        if train:
            step = forward_backward_step(layer, _call, x, grad, device, dtype)
        else:

            def step(layer: nn.Module = layer) -> Tensor:
                with torch.no_grad(), autocast(device, dtype):
                    return layer(x)

        name = f"LocalSelfAttention2d backend={backend}" + (" (auto)" if backend == "halo" else "")
        impls.append(Implementation(bench, name, step, ours=backend == "halo"))
    return impls


def _call(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)


def pixel_implementations(
    kind: str, size: int, batch: int, channels: int, device: torch.device, dtype: torch.dtype, seed: int
) -> List[Implementation]:
    """fwd + bwd of one pixel-attention layer on ``(batch, channels, size, size)``: ours vs the peer (for the
    kernel kinds: :func:`kernel_implementations`)."""
    if kind in KERNEL_KINDS:
        return kernel_implementations(kind, size, batch, channels, device, dtype, seed)
    modules = pixel_modules(kind, channels, seed, device)
    bench = f"{kind} pixel attention fwd+bwd {size}x{size} (B={batch}, C={channels})"
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    grad = torch.randn(batch, channels, size, size, device=device)
    step = {k: forward_backward_step(module, _call, x, grad, device, dtype) for k, module in modules.items()}
    ours_name, peer_name = PIXEL_NAMES[kind]
    return [Implementation(bench, ours_name, step["ours"], ours=True), Implementation(bench, peer_name, step["peer"])]


# --- peak resident memory on CPU -----------------------------------------------------------------


def _rss_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return None


def cpu_step_peak_mib(
    kind: str, which: int, size: int, batch: int, channels: int, dtype: str, seed: int, threads: int
) -> float:
    """The resident memory one step of implementation ``which`` adds at its peak (Linux VmHWM after resetting it,
    glibc told to return freed blocks at once; elsewhere the growth of ru_maxrss, a lower bound). Meant to run alone
    in a fresh process."""
    import gc
    import resource

    torch.set_num_threads(threads)
    pin_malloc()  # freed blocks go back at once: what set-up (e.g. a kernel's check) freed is not reused unseen
    impl = pixel_implementations(kind, size, batch, channels, torch.device("cpu"), DTYPES[dtype], seed)[which]
    gc.collect()
    lib = libc()
    if lib is not None:
        lib.malloc_trim(0)
    before = _rss_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak (VmHWM) to the current resident size
        impl.step()
        return (_rss_kib("VmHWM") - before) / 1024
    except OSError:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        impl.step()
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024


def cpu_step_peak_in_child(*case) -> float:
    """:func:`cpu_step_peak_mib` in a fresh Python (spawned, so nothing this process holds is shared or counted)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return float(pool.submit(cpu_step_peak_mib, *case).result())
        except Exception as err:
            raise RuntimeError(f"peak-memory child for {case} failed: {type(err).__name__}: {err}") from err


# --- the subcommand ------------------------------------------------------------------------------


def pixel_table(rows: Sequence[Dict[str, object]]) -> str:
    columns = [
        ("attention", "---"),
        ("pixels", "---:"),
        ("implementation", "---"),
        ("median ms", "---:"),
        ("IQR ms", "---:"),
        ("peer/ours time", "---:"),
        ("peak MiB", "---:"),
        ("peer/ours memory", "---:"),
    ]
    return table(
        columns,
        (
            [
                r["kind"],
                f"{r['size']}x{r['size']}",
                r["implementation"],
                f"{r['median_ms']:.1f}",
                f"{r['iqr_ms']:.1f}",
                ratio_cell(r, "paired_peer_over_ours"),
                peak_cell(r),
                ratio_cell(r, "memory_peer_over_ours", ".1f"),
            ]
            for r in rows
        ),
    )


def growth_table(growth: Sequence[Dict[str, object]]) -> str:
    columns = [("implementation", "---"), ("pixels", "---"), ("x pixels", "---:"), ("x peak memory", "---:")]
    return table(
        columns,
        (
            [
                g["implementation"],
                f"{g['from']}^2 -> {g['to']}^2",
                f"{g['pixels_ratio']:.0f}",
                f"{g['memory_ratio']:.2f}",
            ]
            for g in growth
        ),
    )


def local_memory_growth(rows: Sequence[Dict[str, object]], sizes: Sequence[int]) -> List[Dict[str, object]]:
    """For ours and the peer: how the local attention's peak memory grows from each size to the next."""

    def peak(size: int, ours: bool) -> Optional[float]:
        return next(
            (r["peak_mib"] for r in rows if r["kind"] == "local" and r["size"] == size and r["ours"] == ours), None
        )

    growth = []
    for ours in (True, False):
        for a, b in zip(sorted(sizes), sorted(sizes)[1:]):
            pa, pb = peak(a, ours), peak(b, ours)
            if pa and pb:
                growth.append(
                    {
                        "implementation": PIXEL_NAMES["local"][0 if ours else 1],
                        "from": a,
                        "to": b,
                        "pixels_ratio": (b / a) ** 2,
                        "memory_ratio": pb / pa,
                    }
                )
    return growth


def pixel(args: argparse.Namespace) -> Dict[str, object]:
    """Global and local pixel attention, fwd+bwd time and peak memory, ours vs the naive peers; prints the table."""
    device, dtype, repeats, warmup, machine = prepare(args, "pixel", cuda=(20, 5), cpu=(3, 1))
    on_cuda = device.type == "cuda"
    config = {
        "device": str(device),
        "dtype": args.dtype,
        "repeats": repeats,
        "warmup": warmup,
        "batch": args.batch,
        "channels": args.channels,
        "global_sizes": args.global_sizes,
        "local_sizes": args.local_sizes,
        "kernel_sizes": args.kernel_sizes,
        "kernel_shapes": args.kernel_shapes,
        "only": args.only,
        "seed": args.seed,
    }
    only = set(args.only or ("global", "local", *KERNEL_KINDS))
    cases = [("global", s, args.batch, args.channels) for s in args.global_sizes] * ("global" in only)
    cases += [("local", s, args.batch, args.channels) for s in args.local_sizes] * ("local" in only)
    kernel_shapes = (
        [(b, c, s) for b, c, s in SASA_SHAPES]
        if config["kernel_shapes"] == "sasa"
        else [(args.batch, args.channels, s) for s in args.kernel_sizes]
    )
    cases += [(kind, s, b, c) for kind in KERNEL_KINDS if kind in only for b, c, s in kernel_shapes]
    rows: List[Dict[str, object]] = []
    for kind, size, batch, channels in cases:
        impls = pixel_implementations(kind, size, batch, channels, device, dtype, args.seed)
        print(f"measuring {impls[0].benchmark} ...", file=sys.stderr, flush=True)
        measure(impls, repeats, warmup, device)
        group = summarize(impls)
        del impls
        if on_cuda:
            torch.cuda.empty_cache()
        else:  # each step's peak in a fresh process, so nothing measured before inflates or hides it
            for which, row in enumerate(group):
                row["peak_mib"] = cpu_step_peak_in_child(
                    kind, which, size, batch, channels, args.dtype, args.seed, torch.get_num_threads()
                )
        ours_peak = group[0]["peak_mib"]
        for row in group:
            row.update(kind=kind, size=size, batch=batch, channels=channels)
            row["memory_peer_over_ours"] = None if row["ours"] or not ours_peak else row["peak_mib"] / ours_peak
        rows.extend(group)
    growth = local_memory_growth(rows, [s for k, s, _, _ in cases if k == "local"])

    where = f"{machine['gpu']}" if machine["gpu"] else f"{machine['cpu']} | {machine['torch_threads']} torch threads"
    peak_note = (
        "CUDA memory a step allocates beyond what it starts with"
        if on_cuda
        else "resident memory one step adds at its peak, each measured alone in a fresh process"
    )
    print(
        f"## pixel attention: {where} | torch {machine['torch']} | {device.type} {args.dtype}\n"
        f"{repeats} interleaved repeats after {warmup} warmup; peer/ours time = median of per-repeat ratios "
        f"(> 1: ours is faster); peak MiB = {peak_note}\n"
    )
    print(pixel_table(rows))
    if growth:
        print("\nlocal attention, peak memory as the pixels grow (linear: memory ratio ~ pixel ratio):\n")
        print(growth_table(growth))
    result = {"machine": machine, "config": config, "results": rows, "local_memory_growth": growth}
    if args.json:
        write_json(result, args.json)
    return result
