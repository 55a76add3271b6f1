"""Before / after of the ``limit`` optimisations, in ONE process: SASA-26 (training step and inference) with today's
``LocalSelfAttention2d`` halo kernel, with the kernel of a git ref (default ``02a84d2``) bound to
the same model's layers, and timm's resnet26, timed interleaved with the matmul peak; checks the outputs are equal.

    PYTHONPATH=$PWD python dev/limit_before_after.py --threads 1 --repeats 7 --results results
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Dict

import torch

import vision_attn
from vision_attn.layers import LocalSelfAttention2d
from vision_attn.run.bench.harness import Implementation, machine_info, seed_everything
from vision_attn.run.bench.limit import (
    FAMILIES,
    _step,
    limit_table,
    measure_limit,
    write_csv,
)


def _load_old(ref: str, path: str, name: str, replace: Dict[str, str]) -> types.ModuleType:
    """The module at ``path`` as it was at ``ref`` (from ``git show``), imported as ``name`` with ``replace`` applied to
    its source (its relative imports pointed at today's package or at other old modules)."""
    source = subprocess.run(["git", "show", f"{ref}:{path}"], check=True, capture_output=True, text=True).stdout
    for old, new in replace.items():
        source = source.replace(old, new)
    file = Path(tempfile.mkdtemp()) / f"{name.rsplit('.', 1)[-1]}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def old_layer_class(ref: str) -> type:
    """``LocalSelfAttention2d`` with its kernels as they were at ``ref`` (``pixel_attention.py`` and
    ``local_kernels.py``, the rest of the package today's): assign it to a layer's ``__class__`` to run the old code."""
    tag = "".join(c for c in ref if c.isalnum())
    kernels = _load_old(
        ref,
        "vision_attn/layers/local_kernels.py",
        f"vision_attn.layers._local_kernels_{tag}",
        {"from ..attention import": "from vision_attn.attention import"},
    )
    layer = _load_old(
        ref,
        "vision_attn/layers/pixel_attention.py",
        f"vision_attn.layers._pixel_attention_{tag}",
        {
            "from ..attention.core import": "from vision_attn.attention.core import",
            "from ..attention import": "from vision_attn.attention import",
            "from .local_kernels import": f"from {kernels.__name__} import",
        },
    )
    return layer.LocalSelfAttention2d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default="02a84d2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--results", default=None, help="append the rows to DIR/limit-<machine>.csv")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device, dtype = torch.device("cpu"), torch.float32
    before = old_layer_class(args.ref)
    family = FAMILIES["sasa"]
    batch, size = family.cpu
    rows = []
    for mode in ("train", "inference"):
        seed_everything(0)
        impls = family.build(mode, batch, size, device, dtype, 0)  # [ours (today), timm resnet26]
        torch.manual_seed(0)
        old = vision_attn.create_model("sasa_resnet26", num_classes=1000).to(device).train(mode == "train")
        for m in old.modules():
            if isinstance(m, LocalSelfAttention2d):
                m.__class__ = before
        images = torch.randn(batch, 3, *size)
        labels = torch.randint(0, 1000, (batch,))
        impls.insert(
            1,
            Implementation(
                impls[0].benchmark,
                f"vision_attn sasa_resnet26 (before: {args.ref})",
                _step(old, mode, images, labels, device, dtype),
                count=impls[0].count,  # the same model: the same model FLOPs
            ),
        )
        if mode == "inference":  # same weights (same seed), same output
            new = vision_attn.create_model("sasa_resnet26", num_classes=1000).eval()
            new.load_state_dict(old.state_dict())
            with torch.no_grad():
                diff = (new(images) - old(images)).abs().max().item()
            print(f"max |after - before| of the logits: {diff:.2e}", file=sys.stderr)
            assert diff < 1e-4, "before and after differ"
        print(f"measuring {impls[0].benchmark} ...", file=sys.stderr, flush=True)
        for row in measure_limit(impls, args.repeats, args.warmup, device, dtype):
            rows.append(
                {"family": family.title, "mode": mode, "batch": batch, "size": list(size), "dtype": "float32", **row}
            )
    print(limit_table(rows))
    for mode in ("train", "inference"):
        after, old_row = [r for r in rows if r["mode"] == mode][:2]
        lo, hi = old_row["paired_ci95"]
        print(
            f"{mode}: fraction {100 * old_row['fraction']:.1f}% -> {100 * after['fraction']:.1f}%; "
            f"after/before speed (paired median) {old_row['paired_peer_over_ours']:.2f}x (95% CI {lo:.2f}-{hi:.2f})"
        )
    if args.results:
        print(write_csv(rows, machine_info(device), args.results))


if __name__ == "__main__":
    main()
