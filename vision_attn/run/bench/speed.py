"""The ``speed`` subcommand: runs the chosen suites (attention, vit; detr, models, gan only when named), prints
the machine and one markdown table, and returns (and optionally writes) the data."""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List

import torch

from .attention import attention_implementations
from .compiled import compiled_implementations
from .detr import detr_implementations
from .gan import gan_implementations
from .harness import markdown_table, measure, prepare, summarize, write_json
from .models import classifier_names, model_implementations, models_table
from .vit import vit_implementations


def speed(args: argparse.Namespace) -> Dict[str, object]:
    """Attention fwd+bwd and ViT-S/16 training step, ours vs peers; prints the table, returns the data."""
    if args.compile and args.only is None:  # speed --compile: every family's step, eager vs compiled
        args.only = "compiled"
    device, dtype, repeats, warmup, machine = prepare(args, "speed", cuda=(50, 10), cpu=(10, 2))
    on_cuda = device.type == "cuda"
    vit_batch = args.vit_batch if args.vit_batch is not None else (64 if on_cuda else 8)
    detr_batch = args.detr_batch if args.detr_batch is not None else (4 if on_cuda else 2)
    detr_size = tuple(args.detr_size) if args.detr_size is not None else ((800, 1066) if on_cuda else (320, 427))

    config = {
        "device": str(device),
        "dtype": args.dtype,
        "repeats": repeats,
        "warmup": warmup,
        "attn_batch": args.attn_batch,
        "vit_batch": vit_batch,
        "vit_img_size": args.vit_img_size,
        "seed": args.seed,
    }
    if args.only == "detr":
        config.update(detr_batch=detr_batch, detr_size=list(detr_size))
    rows: List[Dict[str, object]] = []
    groups = []
    if args.only in (None, "attention"):
        groups.append(lambda: attention_implementations(args.attn_batch, device, dtype, args.seed))
    if args.only in (None, "vit"):
        groups.append(lambda: vit_implementations(vit_batch, args.vit_img_size, device, dtype, args.seed))
    if args.only == "gan":  # opt-in: the SA-GAN quickstart's training step, default layout vs channels-last
        gan_batch = args.gan_batch if args.gan_batch is not None else (256 if on_cuda else 32)
        config.update(gan_batch=gan_batch, gan_config=args.gan_config)
        groups.append(lambda: gan_implementations(gan_batch, device, dtype, args.seed, args.gan_config))
    if args.only == "detr":  # opt-in: two DETR-R50s, minutes on a CPU
        for mode in ("inference", "train"):
            groups.append(lambda mode=mode: detr_implementations(mode, detr_batch, detr_size, device, dtype, args.seed))
    if args.only == "compiled":  # opt-in: each family's training step, eager vs torch.compile
        compiled_batch = args.compiled_batch if args.compiled_batch is not None else (64 if on_cuda else 4)
        config.update(
            compiled_families=args.compiled_families,
            compiled_batch=compiled_batch,
            compiled_img_size=args.compiled_img_size,
            compile_backend=args.compile_backend,
        )
        for family in args.compiled_families:
            groups.append(
                lambda family=family: compiled_implementations(
                    family,
                    compiled_batch,
                    args.compiled_img_size,
                    device,
                    dtype,
                    args.seed,
                    args.compile_backend,
                    args.gan_config,
                )
            )
    model_names: List[str] = []
    if args.only == "models":  # opt-in: every registered classifier (or --models patterns), train and inference
        model_batch = args.models_batch if args.models_batch is not None else (128 if on_cuda else 8)
        model_names = classifier_names(args.models)
        if not model_names:
            raise SystemExit(f"benchmark.py speed: no registered classifier matches --models {' '.join(args.models)}")
        config.update(
            models=model_names,
            models_batch=model_batch,
            compile=args.compile,
            channels_last=args.channels_last,
            models_modes=args.models_modes,
        )
        for name in model_names:
            for mode in args.models_modes:
                groups.append(
                    lambda name=name, mode=mode: model_implementations(
                        name, mode, model_batch, device, dtype, args.seed, args.compile, args.channels_last
                    )
                )
    for build in groups:
        impls = build()
        print(f"measuring {impls[0].benchmark} ...", file=sys.stderr, flush=True)
        measure(impls, repeats, warmup, device)
        rows.extend(summarize(impls))
        del impls
        if on_cuda:
            torch.cuda.empty_cache()

    gpu = f" | {machine['gpu']}" if machine["gpu"] else ""
    print(
        f"## speed: {machine['cpu']} | {machine['torch_threads']} torch threads{gpu} | "
        f"torch {machine['torch']} | timm {machine['timm']} | {device.type} {args.dtype}\n"
        f"{repeats} interleaved repeats after {warmup} warmup; peer/ours = peer median / our median "
        f"(> 1: ours is faster); peak MiB = CUDA memory a step allocates beyond what it starts with\n"
    )
    print(markdown_table(rows))
    detr_rows = [r for r in rows if r["benchmark"].startswith("DETR")]
    for r in detr_rows:
        r["images_per_s"] = detr_batch / r["median_ms"] * 1e3
    if detr_rows:
        print(
            "\nDETR images/s: "
            + "; ".join(f"{r['benchmark']} {r['implementation']}: {r['images_per_s']:.2f}" for r in detr_rows)
        )
    if model_names:
        print("\n" + models_table(rows, model_names, config["models_batch"], device, dtype, args.peak_tflops))
    result = {"machine": machine, "config": config, "results": rows}
    if args.json:
        write_json(result, args.json)
    return result
