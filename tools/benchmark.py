"""Benchmarks of vision_attn against its peers, measured in one process.

Usage::

    python tools/benchmark.py speed                                   # CPU, float32: a few minutes on 2 cores
    python tools/benchmark.py speed --device cuda --dtype bfloat16 --json speed_h100.json
    python tools/benchmark.py speed --only attention --repeats 50
    python tools/benchmark.py speed --only detr --threads 1          # DETR-R50 vs transformers' at 320x427 on CPU
    python tools/benchmark.py speed --only detr --device cuda --dtype bfloat16   # at 800x1066
    python tools/benchmark.py speed --only models --models 'vit_*' resnet50 --device cuda --dtype bfloat16 --compile
    python tools/benchmark.py speed --only gan                        # SA-GAN quickstart step: NCHW vs channels-last
    python tools/benchmark.py pixel                                   # CPU, float32: ~10 min on 2 cores
    python tools/benchmark.py pixel --device cuda --dtype bfloat16 --json pixel_h100.json
    python tools/benchmark.py data-size --config configs/benchmark/data_size_quick.yaml --output-dir runs/data_size_quick
    python tools/benchmark.py data-size --config configs/benchmark/data_size_cifar10.yaml --output-dir runs/ds_c10 \
        --parallel-cells 8                                            # one cell per GPU

``speed`` times two things, each ours against its peers:

* attention forward + backward at ViT-S/16 shapes (B=32, N=197, D=384, H=6):
  ``vision_attn.MultiHeadAttention`` vs ``torch.nn.MultiheadAttention`` (``need_weights=False``, its
  SDPA path) vs timm's ``vision_transformer.Attention``;
* one ViT-S/16 training step at 224 px (forward, cross-entropy, backward, AdamW step):
  ``vision_attn.create_model("vit_small_patch16_224")`` vs ``timm.create_model`` of the same name.

``speed --only detr`` (only when named) times DETR-R50 inference and one training step (forward, a loss on the
predictions, backward, AdamW) against Hugging Face ``transformers``' ``DetrForObjectDetection`` holding the same
weights (checked to predict the same boxes), at 800x1066 on CUDA (320x427 on CPU), and prints images/s.

``speed --only models [--models 'vit_*' resnet50] [--compile] [--channels-last]`` (only when named) times a
training step and inference of every registered classifier (or those matching) against timm's model of the same
name where timm has one, prints images/s, peak CUDA memory, and the MFU of our training step (FLOPs counted by
torch's FlopCounterMode, against ``--peak-tflops``, 989 by default on CUDA in bf16 = H100 dense bf16).

``speed --only gan [--gan-config configs/sagan_shapes.yaml]`` (only when named) times one SA-GAN training step
(D step, G step, EMA update, as ``GenerationTask``) of the config's model in the default layout against
channels-last (``GenerationTask(channels_last=True)``).

``pixel`` measures pixel-level self-attention, forward + backward of one layer on ``(B=4, C=64, S, S)`` maps,
time and peak memory, ours against the naive peer with the same parameters (checked to give the same output):

* global (``NonLocalBlock2d``, S = 16, 32, 64, 96) vs softmax(QK^T)V materialised as SAGAN ports do;
* local 7x7 (``LocalSelfAttention2d``, 8 heads, S = 32, 64, 128) vs unfolding every pixel's 7x7 keys and
  values, as SASA ports do; and how each one's peak memory grows with the pixels (linear: x4 pixels, ~x4).

On CPU each peak is measured alone, in a fresh process (the resident memory one step adds at its peak).

Measurement: after warmup, every repeat times every implementation of a benchmark once, rotating the
order each repeat (so drift in clock speed or cache state hits all alike); CUDA is synchronised around each
timing. It prints the machine and a markdown table (median, IQR, peer median / our median: > 1 means ours
is faster, peak CUDA memory of the step); ``--json PATH`` writes the same data.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vision_attn


@dataclass
class Implementation:
    """One contender of a benchmark: ``step()`` runs one timed step and returns its output (for the shape check)."""

    benchmark: str
    name: str
    step: Callable[[], Tensor]
    ours: bool = False
    times_ms: List[float] = field(default_factory=list)
    peaks_mib: List[float] = field(default_factory=list)


# --- machine and measurement -------------------------------------------------------------------


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


def measure(impls: Sequence[Implementation], repeats: int, warmup: int, device: torch.device) -> None:
    """Check that every output has our shape, warm up, then time interleaved with a rotating order."""
    shapes = {impl.name: tuple(impl.step().shape) for impl in impls}  # one untimed step each
    ours = next(impl for impl in impls if impl.ours)
    for name, shape in shapes.items():
        if shape != shapes[ours.name]:
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
                "paired_peer_over_ours": None if impl.ours else statistics.median(
                    p / o for p, o in zip(t, ours_times)
                ),
                "peak_mib": max(impl.peaks_mib) if impl.peaks_mib else None,
                "times_ms": list(t),
            }
        )
    return rows


def markdown_table(rows: Sequence[Dict[str, object]]) -> str:
    lines = [
        "| benchmark | implementation | median ms | IQR ms | peer/ours | peak MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        ratio = "ours" if r["ours"] else f"{r['peer_over_ours']:.2f}"
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(
            f"| {r['benchmark']} | {r['implementation']} | {r['median_ms']:.1f} | {r['iqr_ms']:.1f} | {ratio} | {peak} |"
        )
    return "\n".join(lines)


# --- speed ---------------------------------------------------------------------------------------


def attention_implementations(batch: int, device: torch.device, dtype: torch.dtype, seed: int) -> List[Implementation]:
    """Attention forward + backward at ViT-S/16 shapes: ours vs torch's vs timm's, same init seed."""
    from timm.models.vision_transformer import Attention as TimmAttention

    tokens, dim, heads = 197, 384, 6
    bench = f"attention fwd+bwd (B={batch}, N={tokens}, D={dim}, H={heads})"
    torch.manual_seed(seed)
    x = torch.randn(batch, tokens, dim, device=device, requires_grad=True)
    grad = torch.randn(batch, tokens, dim, device=device)
    modules = {}
    for name, build in [
        ("vision_attn.MultiHeadAttention", lambda: vision_attn.MultiHeadAttention(dim, heads)),
        ("torch.nn.MultiheadAttention", lambda: nn.MultiheadAttention(dim, heads, batch_first=True)),
        ("timm Attention", lambda: TimmAttention(dim, num_heads=heads, qkv_bias=True)),
    ]:
        torch.manual_seed(seed)
        modules[name] = build().to(device).train()
    forwards = {
        "vision_attn.MultiHeadAttention": lambda m: m(x),
        "torch.nn.MultiheadAttention": lambda m: m(x, x, x, need_weights=False)[0],
        "timm Attention": lambda m: m(x),
    }

    def make_step(name: str) -> Callable[[], Tensor]:
        module, forward = modules[name], forwards[name]

        def step() -> Tensor:
            x.grad = None
            module.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                out = forward(module)
            out.backward(grad)
            return out

        return step

    timm_name = f"timm Attention (fused_attn={modules['timm Attention'].fused_attn})"
    return [
        Implementation(bench, "vision_attn.MultiHeadAttention", make_step("vision_attn.MultiHeadAttention"), ours=True),
        Implementation(bench, "torch.nn.MultiheadAttention", make_step("torch.nn.MultiheadAttention")),
        Implementation(bench, timm_name, make_step("timm Attention")),
    ]


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


def gan_implementations(
    batch: int, device: torch.device, dtype: torch.dtype, seed: int, config: str = "configs/sagan_shapes.yaml"
) -> List[Implementation]:
    """One SA-GAN training step as ``GenerationTask`` takes it (a discriminator step on real and generated images,
    hinge loss; a generator step; the EMA update with its BatchNorm forward), for the model of ``config`` (the
    shapes quickstart's widths), in the default memory layout vs channels-last (ours = channels-last)."""
    import yaml

    from vision_attn.losses.gan import gan_losses

    path = Path(config)
    if not path.is_file() and not path.is_absolute():
        path = Path(__file__).resolve().parents[1] / config  # the repository's configs/, from any working directory
    if not path.is_file():
        raise SystemExit(f"benchmark.py speed --only gan: no config file {config}")
    try:
        init = (yaml.safe_load(path.read_text()) or {})["model"]["init_args"]
        if not isinstance(init, dict):
            raise TypeError(type(init).__name__)
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise SystemExit(f"benchmark.py speed --only gan: {path} is not a GAN config with model.init_args "
                         f"(as configs/sagan_shapes.yaml): {type(err).__name__}: {err}") from None
    name, model_args = init.get("model", "sagan_32"), dict(init.get("model_args") or {})
    lr_g, lr_d, betas = float(init.get("lr_g", 1e-4)), float(init.get("lr_d", 4e-4)), tuple(float(b) for b in init.get("betas", (0.0, 0.9)))
    d_loss_fn, g_loss_fn = gan_losses(init.get("loss", "hinge"))
    impls = []
    for channels_last in (False, True):
        torch.manual_seed(seed)
        model = vision_attn.create_model(name, num_classes=10, **model_args).to(device).train()
        size, z_dim = model.img_size, model.z_dim
        real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        labels = torch.randint(0, 10, (batch,), device=device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            real = real.contiguous(memory_format=torch.channels_last)
        G, D = model.generator, model.discriminator
        opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas)

        def step(model=model, G=G, D=D, opt_g=opt_g, opt_d=opt_d, real=real) -> Tensor:
            z = torch.randn(batch, z_dim, device=device)
            with autocast(device, dtype):
                with torch.no_grad():
                    fake = G(z, labels)
                d_loss = d_loss_fn(D(real, labels), D(fake, labels))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            D.requires_grad_(False)
            with autocast(device, dtype):
                gen = G(z, labels)
                g_loss = g_loss_fn(D(gen, labels))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            D.requires_grad_(True)
            model.update_ema(0.99, z, labels)
            return gen.detach()

        label = "channels-last" if channels_last else "default layout (NCHW)"
        impls.append(Implementation(f"{name} GAN train step, {path.name} widths (B={batch}, {size}px)", label, step, ours=channels_last))
    return impls


def vit_implementations(
    batch: int, img_size: int, device: torch.device, dtype: torch.dtype, seed: int
) -> List[Implementation]:
    """One ViT-S/16 training step (forward, cross-entropy, backward, AdamW): ours vs timm's, same init seed."""
    import timm

    name = "vit_small_patch16_224"
    bench = f"ViT-S/16 train step (B={batch}, {img_size}px)"
    torch.manual_seed(seed)
    images = torch.randn(batch, 3, img_size, img_size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    impls = []
    for label, build, ours in [
        (f"vision_attn {name}", lambda: vision_attn.create_model(name, img_size=img_size), True),
        (f"timm {name}", lambda: timm.create_model(name, pretrained=False, img_size=img_size), False),
    ]:
        torch.manual_seed(seed)
        model = build().to(device).train()
        impls.append(Implementation(bench, label, classifier_train_step(model, model, images, labels, device, dtype), ours=ours))
    return impls


def detr_implementations(
    mode: str, batch: int, size: Tuple[int, int], device: torch.device, dtype: torch.dtype, seed: int
) -> List[Implementation]:
    """DETR-R50 at ``size = (H, W)``, ours vs Hugging Face's ``DetrForObjectDetection`` with the same weights
    (HF's random init mapped onto ours, checked to give the same predictions): ``mode="inference"`` (eval,
    no_grad) or ``"train"`` (forward, a loss on the predictions, backward, AdamW step; dropout 0.1 in both,
    including the attention dropout of the official DETR)."""
    from transformers import DetrConfig, DetrForObjectDetection

    from vision_attn.models.detr import detr_state_dict_from_hf

    train = mode == "train"
    H, W = size
    bench = f"DETR-R50 {'train step' if train else 'inference'} (B={batch}, {H}x{W})"
    torch.manual_seed(seed)
    config = DetrConfig(backbone="resnet50", num_labels=91, dropout=0.1, attention_dropout=0.1)  # random init, no download
    peer = DetrForObjectDetection(config).to(device)
    ours = vision_attn.create_model("detr_resnet50", aux_loss=False).to(device)  # HF computes no auxiliary heads
    ours.load_state_dict(detr_state_dict_from_hf(peer.state_dict()))
    torch.manual_seed(seed)
    images = torch.randn(batch, 3, H, W, device=device)
    with torch.no_grad(), autocast(device, dtype):
        err = (ours.eval()(images)["pred_boxes"] - peer.eval()(pixel_values=images).pred_boxes.float()).abs().max().item()
    if dtype == torch.float32 and err > 1e-3:
        raise RuntimeError(f"{bench}: ours and Hugging Face's DETR disagree by {err:.2e} for the same weights")
    print(f"{bench}: same weights, max |box difference| {err:.1e}", file=sys.stderr, flush=True)

    def make_step(model: nn.Module, forward: Callable[[Tensor], Tuple[Tensor, Tensor]]) -> Callable[[], Tensor]:
        if not train:
            model.eval()

            def infer() -> Tensor:
                with torch.no_grad(), autocast(device, dtype):
                    return forward(images)[0]

            return infer
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-4)

        def step() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                logits, boxes = forward(images)
                loss = logits.float().logsumexp(-1).mean() + boxes.float().mean()
            loss.backward()
            optimizer.step()
            return logits

        return step

    def ours_forward(x: Tensor) -> Tuple[Tensor, Tensor]:
        out = ours(x)
        return out["pred_logits"], out["pred_boxes"]

    def peer_forward(x: Tensor) -> Tuple[Tensor, Tensor]:
        out = peer(pixel_values=x)
        return out.logits, out.pred_boxes

    peer_name = f"transformers DetrForObjectDetection ({peer.config._attn_implementation})"
    return [
        Implementation(bench, "vision_attn detr_resnet50", make_step(ours, ours_forward), ours=True),
        Implementation(bench, peer_name, make_step(peer, peer_forward)),
    ]


def model_input_size(name: str) -> int:
    """The image side a registered classifier is built for: 32 for the CIFAR-sized ones, else 224."""
    return 32 if name.endswith("_32") or "cifar" in name else 224


def model_implementations(
    name: str, mode: str, batch: int, device: torch.device, dtype: torch.dtype, seed: int,
    compile_models: bool = False, channels_last: bool = False,
) -> List[Implementation]:
    """One registered classifier, a training step (forward, cross-entropy, backward, AdamW) or inference (no grad):
    ours vs ``timm.create_model`` of the same name when timm has it (then same init seed), else ours alone."""
    import timm

    size = model_input_size(name)
    bench = f"{name} {mode} (B={batch}, {size}px)"
    torch.manual_seed(seed)
    images = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    builders = [(f"vision_attn {name}", lambda: vision_attn.create_model(name, num_classes=10), True)]
    if timm.list_models(name):
        builders.append((f"timm {name}", lambda: timm.create_model(name, pretrained=False, num_classes=10), False))
    impls = []
    for label, build, ours in builders:
        torch.manual_seed(seed)
        model = build().to(device).train(mode == "train")
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        fwd = torch.compile(model) if compile_models else model
        if mode == "train":
            step = classifier_train_step(model, fwd, images, labels, device, dtype)
        else:
            def step(fwd: nn.Module = fwd) -> Tensor:
                with torch.inference_mode(), autocast(device, dtype):
                    return fwd(images)

        impls.append(Implementation(bench, label, step, ours=ours))
    return impls


def train_step_flops(name: str, batch: int, device: torch.device, dtype: torch.dtype) -> int:
    """FLOPs of one training step of a registered classifier (forward + backward, counted by torch's FlopCounterMode:
    matmuls, convolutions and attention kernels; the optimizer's elementwise work is not counted, as usual for MFU)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = model_input_size(name)
    model = vision_attn.create_model(name, num_classes=10).to(device).train()
    images = torch.randn(batch, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(device, dtype):
            loss = model(images).float().logsumexp(-1).mean()
        loss.backward()
    return int(counter.get_total_flops())


def _prepare(args: argparse.Namespace, name: str, cuda: Tuple[int, int], cpu: Tuple[int, int]):
    """The setup every benchmark shares: device check, dtype, (repeats, warmup) defaults per device, threads,
    seed and machine description. Returns ``(device, dtype, repeats, warmup, machine)``."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"benchmark.py {name}: --device cuda asked for, but torch.cuda.is_available() is False")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    default_repeats, default_warmup = cuda if device.type == "cuda" else cpu
    repeats = args.repeats if args.repeats is not None else default_repeats
    warmup = args.warmup if args.warmup is not None else default_warmup
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    return device, dtype, repeats, warmup, machine_info(device)


def speed(args: argparse.Namespace) -> Dict[str, object]:
    """Attention fwd+bwd and ViT-S/16 training step, ours vs peers; prints the table, returns the data."""
    device, dtype, repeats, warmup, machine = _prepare(args, "speed", cuda=(50, 10), cpu=(10, 2))
    on_cuda = device.type == "cuda"
    vit_batch = args.vit_batch if args.vit_batch is not None else (64 if on_cuda else 8)
    detr_batch = args.detr_batch if args.detr_batch is not None else (4 if on_cuda else 2)
    detr_size = tuple(args.detr_size) if args.detr_size is not None else ((800, 1066) if on_cuda else (320, 427))

    config = {
        "device": str(device), "dtype": args.dtype, "repeats": repeats, "warmup": warmup,
        "attn_batch": args.attn_batch, "vit_batch": vit_batch, "vit_img_size": args.vit_img_size, "seed": args.seed,
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
    model_names: List[str] = []
    if args.only == "models":  # opt-in: every registered classifier (or --models patterns), train and inference
        model_batch = args.models_batch if args.models_batch is not None else (128 if on_cuda else 8)
        model_names = sorted({n for pat in args.models for n in vision_attn.list_models(pat)}
                             - set(vision_attn.list_models("detr_*")) - set(vision_attn.list_models("sagan_*")))
        if not model_names:
            raise SystemExit(f"benchmark.py speed: no registered classifier matches --models {' '.join(args.models)}")
        config.update(models=model_names, models_batch=model_batch, compile=args.compile, channels_last=args.channels_last)
        for name in model_names:
            for mode in ("train", "inference"):
                groups.append(lambda name=name, mode=mode: model_implementations(
                    name, mode, model_batch, device, dtype, args.seed, args.compile, args.channels_last))
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
        print("\nDETR images/s: " + "; ".join(f"{r['benchmark']} {r['implementation']}: {r['images_per_s']:.2f}" for r in detr_rows))
    if model_names:
        print("\n" + models_table(rows, model_names, config["models_batch"], device, dtype, args.peak_tflops))
    result = {"machine": machine, "config": config, "results": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def models_table(
    rows: List[Dict[str, object]], names: Sequence[str], batch: int, device: torch.device, dtype: torch.dtype,
    peak_tflops: Optional[float],
) -> str:
    """Per model: train and inference images/s and peak memory, ours and timm's, and MFU of our training step.
    Adds ``images_per_s`` (and ``mfu``) to ``rows``."""
    if peak_tflops is None and device.type == "cuda" and dtype == torch.bfloat16:
        peak_tflops = 989.0  # H100 SXM dense bf16
    lines = ["| model | mode | ours img/s | timm img/s | timm/ours time | ours peak MiB | MFU |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        for mode in ("train", "inference"):
            group = [r for r in rows if r["benchmark"].startswith(f"{name} {mode} ")]
            if not group:
                continue
            for r in group:
                r["images_per_s"] = batch / r["median_ms"] * 1e3
            ours = next(r for r in group if r["ours"])
            peer = next((r for r in group if not r["ours"]), None)
            mfu = ""
            if mode == "train" and peak_tflops:
                flops = train_step_flops(name, batch, device, dtype)
                ours["train_step_flops"] = flops
                ours["mfu"] = flops / (ours["median_ms"] / 1e3) / (peak_tflops * 1e12)
                mfu = f"{100 * ours['mfu']:.1f}%"
            peak = "n/a" if ours["peak_mib"] is None else f"{ours['peak_mib']:.0f}"
            lines.append(
                f"| {name} | {mode} | {ours['images_per_s']:.1f} | "
                + (f"{peer['images_per_s']:.1f} | {peer['peer_over_ours']:.2f}" if peer else "- | -")
                + f" | {peak} | {mfu} |"
            )
    note = f"MFU against {peak_tflops} TFLOP/s" if peak_tflops else "MFU: pass --peak-tflops (default 989 on cuda bf16)"
    return f"per-model images/s (B={batch}); {note}\n" + "\n".join(lines)


# --- pixel attention -----------------------------------------------------------------------------


class MaterialisingNonLocal(nn.Module):
    """The peer of ``NonLocalBlock2d``: what SAGAN ports run, softmax(QK^T) materialised as ``(B, H, N, N)`` then
    multiplied by V, with the same block's parameters. The weights come from the core's
    ``attention_weights`` (the weights path), so there is still one softmax(QK^T) in the project."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        from vision_attn.attention import attention_weights

        b = self.block
        B, _, H, W = x.shape
        q, k, v = b._heads(b.query(x)), b._heads(b.pool(b.key(x))), b._heads(b.pool(b.value(x)))
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
        out = scaled_dot_product_attention(q, key, unfold(v), inside.transpose(1, 2)[:, None, :, None, :], scale=d ** -0.5)
        return m.pool(out.reshape(B, nh, n, d).permute(0, 1, 3, 2).reshape(B, C, H, W))


def _pixel_modules(kind: str, channels: int, seed: int, device: torch.device) -> Dict[str, nn.Module]:
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


def pixel_implementations(
    kind: str, size: int, batch: int, channels: int, device: torch.device, dtype: torch.dtype, seed: int
) -> List[Implementation]:
    """fwd + bwd of one pixel-attention layer on ``(batch, channels, size, size)``: ours vs the peer."""
    modules = _pixel_modules(kind, channels, seed, device)
    bench = f"{kind} pixel attention fwd+bwd {size}x{size} (B={batch}, C={channels})"
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)
    grad = torch.randn(batch, channels, size, size, device=device)

    def make_step(module: nn.Module) -> Callable[[], Tensor]:
        def step() -> Tensor:
            x.grad = None
            module.zero_grad(set_to_none=True)
            with autocast(device, dtype):
                out = module(x)
            out.backward(grad)
            return out

        return step

    ours_name, peer_name = PIXEL_NAMES[kind]
    return [
        Implementation(bench, ours_name, make_step(modules["ours"]), ours=True),
        Implementation(bench, peer_name, make_step(modules["peer"])),
    ]


def _rss_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return None


def _cpu_step_peak_mib(kind: str, which: int, size: int, batch: int, channels: int, dtype: str, seed: int, threads: int) -> float:
    """In a fresh process: the resident memory one fwd+bwd step adds at its peak (Linux VmHWM after resetting
    it; elsewhere the growth of ru_maxrss, a lower bound)."""
    import gc
    import resource

    torch.set_num_threads(threads)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    impl = pixel_implementations(kind, size, batch, channels, torch.device("cpu"), torch_dtype, seed)[which]
    gc.collect()
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


def _cpu_step_peak_in_child(*case) -> float:
    """:func:`_cpu_step_peak_mib` in a fresh Python that loads this file (however this process loaded it)."""
    import os
    import subprocess

    code = (
        "import importlib.util, json, sys\n"
        "spec = importlib.util.spec_from_file_location('benchmark_peak_child', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules[spec.name] = module\n"
        "spec.loader.exec_module(module)\n"
        "print(json.dumps(module._cpu_step_peak_mib(*json.loads(sys.argv[2]))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, os.path.abspath(__file__), json.dumps(case)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory child for {case} failed:\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def pixel_table(rows: Sequence[Dict[str, object]]) -> str:
    lines = [
        "| attention | pixels | implementation | median ms | IQR ms | peer/ours time | peak MiB | peer/ours memory |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        t = "ours" if r["ours"] else f"{r['paired_peer_over_ours']:.2f}"
        m = "ours" if r["ours"] else ("n/a" if r["memory_peer_over_ours"] is None else f"{r['memory_peer_over_ours']:.1f}")
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(
            f"| {r['kind']} | {r['size']}x{r['size']} | {r['implementation']} | {r['median_ms']:.1f} | {r['iqr_ms']:.1f} | "
            f"{t} | {peak} | {m} |"
        )
    return "\n".join(lines)


def pixel(args: argparse.Namespace) -> Dict[str, object]:
    """Global and local pixel attention, fwd+bwd time and peak memory, ours vs the naive peers; prints the table."""
    device, dtype, repeats, warmup, machine = _prepare(args, "pixel", cuda=(20, 5), cpu=(3, 1))
    on_cuda = device.type == "cuda"
    config = {
        "device": str(device), "dtype": args.dtype, "repeats": repeats, "warmup": warmup, "batch": args.batch,
        "channels": args.channels, "global_sizes": args.global_sizes, "local_sizes": args.local_sizes, "seed": args.seed,
    }
    cases = [("global", s) for s in args.global_sizes] * (args.only in (None, "global"))
    cases += [("local", s) for s in args.local_sizes] * (args.only in (None, "local"))
    rows: List[Dict[str, object]] = []
    for kind, size in cases:
        impls = pixel_implementations(kind, size, args.batch, args.channels, device, dtype, args.seed)
        print(f"measuring {impls[0].benchmark} ...", file=sys.stderr, flush=True)
        measure(impls, repeats, warmup, device)
        group = summarize(impls)
        del impls
        if on_cuda:
            torch.cuda.empty_cache()
        else:  # each step's peak in a fresh process, so nothing measured before inflates or hides it
            for which, row in enumerate(group):
                row["peak_mib"] = _cpu_step_peak_in_child(
                    kind, which, size, args.batch, args.channels, args.dtype, args.seed, torch.get_num_threads()
                )
        ours_peak = group[0]["peak_mib"]
        for row in group:
            row.update(kind=kind, size=size)
            row["memory_peer_over_ours"] = None if row["ours"] or not ours_peak else row["peak_mib"] / ours_peak
        rows.extend(group)

    def peak(kind: str, size: int, ours: bool) -> Optional[float]:
        return next((r["peak_mib"] for r in rows if r["kind"] == kind and r["size"] == size and r["ours"] == ours), None)

    growth = []
    for ours in (True, False):
        sizes = sorted(s for k, s in cases if k == "local")
        for a, b in zip(sizes, sizes[1:]):
            pa, pb = peak("local", a, ours), peak("local", b, ours)
            if pa and pb:
                growth.append({"implementation": PIXEL_NAMES["local"][0 if ours else 1], "from": a, "to": b,
                               "pixels_ratio": (b / a) ** 2, "memory_ratio": pb / pa})

    where = f"{machine['gpu']}" if machine["gpu"] else f"{machine['cpu']} | {machine['torch_threads']} torch threads"
    peak_note = ("CUDA memory a step allocates beyond what it starts with" if on_cuda else
                 "resident memory one step adds at its peak, each measured alone in a fresh process")
    print(
        f"## pixel attention: {where} | torch {machine['torch']} | {device.type} {args.dtype}\n"
        f"{repeats} interleaved repeats after {warmup} warmup; peer/ours time = median of per-repeat ratios "
        f"(> 1: ours is faster); peak MiB = {peak_note}\n"
    )
    print(pixel_table(rows))
    if growth:
        print("\nlocal attention, peak memory as the pixels grow (linear: memory ratio ~ pixel ratio):\n")
        print("| implementation | pixels | x pixels | x peak memory |\n| --- | --- | ---: | ---: |")
        for g in growth:
            print(f"| {g['implementation']} | {g['from']}^2 -> {g['to']}^2 | {g['pixels_ratio']:.0f} | {g['memory_ratio']:.2f} |")
    result = {"machine": machine, "config": config, "results": rows, "local_memory_growth": growth}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


# --- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmark.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("speed", help="attention fwd+bwd and ViT-S/16 train step vs torch and timm")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16 = autocast")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 10 on cpu, 50 on cuda)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repeats first (default 2 on cpu, 10 on cuda)")
    p.add_argument("--attn-batch", type=int, default=32)
    p.add_argument("--vit-batch", type=int, default=None, help="default 8 on cpu, 64 on cuda")
    p.add_argument("--vit-img-size", type=int, default=224, help="smaller only for smoke tests (e.g. 32)")
    p.add_argument("--gan-batch", type=int, default=None, help="with --only gan: default 32 on cpu, 256 on cuda")
    p.add_argument("--gan-config", default="configs/sagan_shapes.yaml", help="with --only gan: the GAN config whose model is timed")
    p.add_argument("--only", choices=["attention", "vit", "detr", "models", "gan"], default=None,
                   help="one benchmark; detr (DETR-R50 inference and train step vs transformers'), models (every "
                   "registered classifier vs timm's) and gan (SA-GAN step, NCHW vs channels-last) run only when named")
    p.add_argument("--models", nargs="+", default=["*"], help="with --only models: registry patterns (default all)")
    p.add_argument("--models-batch", type=int, default=None, help="with --only models: default 8 on cpu, 128 on cuda")
    p.add_argument("--compile", action="store_true", help="with --only models: torch.compile ours and timm's")
    p.add_argument("--channels-last", action="store_true", help="with --only models: channels-last images and weights")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="accelerator peak for MFU (default 989 = H100 dense bf16 when --device cuda --dtype bfloat16)")
    p.add_argument("--detr-batch", type=int, default=None, help="DETR images per step (default 2 on cpu, 4 on cuda)")
    p.add_argument("--detr-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="DETR image size (default 320 427 on cpu, 800 1066 on cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write machine, config and results as JSON")
    p.set_defaults(func=speed)

    p = sub.add_parser("pixel", help="global and local pixel attention: time and peak memory vs naive peers")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16 = autocast")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3 on cpu, 20 on cuda)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repeats first (default 1 on cpu, 5 on cuda)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--global-sizes", type=int, nargs="+", default=[16, 32, 64, 96], help="square map sides")
    p.add_argument("--local-sizes", type=int, nargs="+", default=[32, 64, 128], help="square map sides")
    p.add_argument("--only", choices=["global", "local"], default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write machine, config and results as JSON")
    p.set_defaults(func=pixel)

    p = sub.add_parser(
        "data-size",
        help="attention vs CNN test top-1 at varying training-set sizes (resumable sweep of Lightning fits)",
        description="Arguments it does not know (--trainer.devices 4, --data.init_args.root /data) go to every cell's "
        "LightningCLI.",
    )
    p.add_argument("--config", required=True, help="a sweep YAML, e.g. configs/benchmark/data_size_quick.yaml")
    p.add_argument("--output-dir", required=True, help="results.csv, data_size.png, data_size.md and cells/ go here")
    p.add_argument("--parallel-cells", type=int, default=1,
                   help="cells run at once: one per GPU when GPUs are visible (each cell then on 1 device)")
    p.add_argument("--print-cells", action="store_true",
                   help="run nothing: print the command of every cell still to run (to submit as cluster jobs); a "
                   "later run collects their results")
    p.set_defaults(func=data_size)
    return parser


def data_size(args: argparse.Namespace) -> Dict[str, object]:
    """The data-size sweep (``vision_attn.tasks.sweep``): cells, results.csv, data_size.png / .md."""
    from vision_attn.tasks.sweep import run_sweep

    if args.print_cells:
        return {"commands": run_sweep(args.config, args.output_dir, extra_args=args.cell_args, print_cells=True)}
    rows = run_sweep(args.config, args.output_dir, extra_args=args.cell_args, parallel_cells=args.parallel_cells)
    print(open(f"{args.output_dir}/data_size.md").read())
    return {"results": rows}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "data-size":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.cell_args = rest
    return args.func(args)


if __name__ == "__main__":
    main()
