"""``gpu-suite``: every GPU figure the README lacks, in one call that fits a time budget (default 9 minutes).

The parts, most wanted first; each is one ``tools/benchmark.py`` command run in a process of its own (a part that
fails — out of memory, a missing peer — or overruns is recorded and the next one runs), killed when the budget is
spent, and skipped when its estimate no longer fits:

1. ``vit``: ViT-S/16 and ViT-B/16 training step vs timm, bf16, eager, with MFU (``speed --only models``);
2. ``detr``: DETR-R50 inference and training step at 800x1066 vs transformers' ``DetrForObjectDetection`` (float32,
   so the run also checks both predict the same boxes);
3. ``pixel``: the pixel-attention table (global and local, time and peak memory vs the naive peers), bf16;
4. ``kernels``: ``LocalSelfAttention2d``'s kernels (halo, unfold, flex), fwd+bwd and forward, bf16 — what
   ``backend="auto"`` should pick on this device;
5. ``limit``: every family's training step and inference (ViT-S, SASA-26, non-local R18, DETR-R50 at 800x1066,
   SA-GAN), ours and the peers': MFU against the bf16 matmul peak measured in the same process, and against the
   device's datasheet figure (``limit``);
6. ``gan``: the SA-GAN shapes recipe's ``gan_step``, NCHW vs channels-last, bf16;
7. ``vit-compiled``: part 1 with ours and timm's compiled (inductor), bf16;
8. ``compiled``: each family's training step (ViT, SASA, DETR, SA-GAN), eager vs inductor, bf16.

``--json OUT.json`` gets the machine, the budget and every part (command, status ok / failed / timeout / skipped,
seconds, its results and printed tables); ``OUT.md`` beside it the tables. The JSON is rewritten after every part,
so a suite that is killed keeps what it measured. The estimates are guesses for one H100/H200, used only to skip.
``--smoke`` runs the same parts at toy sizes (e.g. on a CPU, to check the suite itself).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from .harness import machine_info

__all__ = ["Part", "suite_parts", "gpu_suite"]

VITS = ["vit_small_patch16_224", "vit_base_patch16_224"]


@dataclass
class Part:
    """One command of the suite: ``argv`` for ``tools/benchmark.py`` (device, dtype and ``--json`` are added)."""

    name: str
    what: str
    argv: List[str]
    estimate_s: float
    dtype: str = "bfloat16"


def suite_parts(smoke: bool = False) -> List[Part]:
    """The parts in the order they run; with ``smoke`` the same commands at toy sizes."""
    vit = [
        "speed",
        "--only",
        "models",
        "--models",
        *VITS,
        "--models-modes",
        "train",
        "--repeats",
        "30",
        "--warmup",
        "5",
    ]
    parts = [
        Part("vit", "ViT-S/16, ViT-B/16 train step vs timm, eager, MFU", vit, 90),
        Part(
            "detr",
            "DETR-R50 inference + train step vs transformers, 800x1066",
            ["speed", "--only", "detr", "--repeats", "20", "--warmup", "3"],
            150,
            dtype="float32",
        ),
        Part(
            "pixel", "pixel attention vs naive peers, time and peak memory", ["pixel", "--only", "global", "local"], 90
        ),
        Part(
            "kernels",
            "LocalSelfAttention2d's kernels: halo vs unfold vs flex, fwd+bwd and forward",
            ["pixel", "--only", "kernels", "kernels-inference"],
            90,
        ),
        Part(
            "limit",
            "every family's MFU (train, inference) vs the measured bf16 matmul peak and the datasheet, with peers",
            ["limit", "--repeats", "10", "--warmup", "3"],
            180,
        ),
        Part(
            "gan",
            "SA-GAN shapes gan_step, NCHW vs channels-last",
            ["speed", "--only", "gan", "--repeats", "30", "--warmup", "5"],
            45,
        ),
        Part(
            "vit-compiled",
            "ViT-S/16, ViT-B/16 train step vs timm, both compiled (inductor), MFU",
            vit + ["--compile"],
            200,
        ),
        Part(
            "compiled",
            "ViT, SASA, DETR, SA-GAN train step, eager vs inductor",
            ["speed", "--only", "compiled", "--repeats", "20", "--warmup", "3"],
            200,
        ),
    ]
    if smoke:
        tiny = {
            "vit": ["--models", "vit_tiny_patch16_224", "--models-batch", "2"],
            "detr": ["--detr-batch", "1", "--detr-size", "64", "96"],
            "pixel": ["--batch", "1", "--channels", "16", "--global-sizes", "8", "--local-sizes", "8"],
            "kernels": ["--batch", "1", "--channels", "16", "--kernel-sizes", "8"],
            "limit": ["--toy", "--families", "nonlocal"],
            "gan": ["--gan-batch", "2"],
            "vit-compiled": ["--models", "vit_tiny_patch16_224", "--models-batch", "2"],
            "compiled": [
                "--compiled-families",
                "detr",
                "--compiled-batch",
                "2",
                "--compiled-img-size",
                "32",
                "--compile-backend",
                "aot_eager",
            ],
        }
        for part in parts:
            argv = [a for a in part.argv if a not in VITS]
            if "--models" in argv:
                argv.remove("--models")
            part.argv = argv + tiny[part.name] + ["--repeats", "1", "--warmup", "0"]
            part.estimate_s = 60
            part.what = f"smoke (toy sizes) of: {part.what}"
    return parts


def _run_part(part: Part, args: argparse.Namespace, json_path: Path, timeout: float) -> Dict[str, object]:
    argv = [
        *part.argv,
        "--device",
        args.device,
        "--dtype",
        part.dtype if args.dtype is None else args.dtype,
        "--json",
        str(json_path),
    ]
    record: Dict[str, object] = {"name": part.name, "what": part.what, "argv": argv}
    json_path.unlink(missing_ok=True)  # no figures of an earlier run taken for this one's
    start = time.perf_counter()
    # its own process group: an overrun part is killed with the workers it started
    proc = subprocess.Popen(
        [sys.executable, "-m", "vision_attn.run.bench", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=max(timeout, 0.1))
        status = "ok" if proc.returncode == 0 else "failed"
        why = f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        status, why = "timeout", f"killed after {timeout:.0f} s (the budget left)"
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["status"] = status
    record["tables"] = stdout
    if status == "ok" and json_path.exists():
        record["result"] = json.loads(json_path.read_text())
    else:
        lines = [ln for ln in stderr.splitlines() if ln.strip() and "Warning" not in ln]
        record["error"] = "\n".join([why, *lines[-15:]])
    return record


def _write(out: Optional[str], data: Dict[str, object]) -> None:
    if not out:
        return
    path = Path(out)
    path.write_text(json.dumps(data, indent=2))
    lines = [
        f"# gpu-suite: {data['machine'].get('gpu') or data['machine']['cpu']} | torch {data['machine']['torch']}",
        f"budget {data['budget_s']} s, used {data['seconds']} s\n",
    ]
    for part in data["parts"]:
        lines.append(f"## {part['name']}: {part['what']} — {part['status']} ({part.get('seconds', 0)} s)\n")
        lines.append(part.get("tables") or part.get("error") or "")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def gpu_suite(args: argparse.Namespace) -> Dict[str, object]:
    """Run the parts within ``--budget-s``; returns (and with ``--json`` writes) what each gave."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "benchmark.py gpu-suite: --device cuda, but torch.cuda.is_available() is False "
            "(to check the suite itself on a CPU: --device cpu --smoke)"
        )
    parts = suite_parts(args.smoke)
    unknown = set(args.parts or ()) - {p.name for p in parts}
    if unknown:
        raise SystemExit(
            f"benchmark.py gpu-suite: unknown --parts {sorted(unknown)}; the parts are {[p.name for p in parts]}"
        )
    if args.parts:
        parts = [p for p in parts if p.name in args.parts]
    data: Dict[str, object] = {"machine": machine_info(device), "budget_s": args.budget_s, "seconds": 0.0, "parts": []}
    out_dir = Path(args.json).resolve().parent if args.json else Path.cwd()
    stem = Path(args.json).stem if args.json else "gpu_suite"
    start = time.perf_counter()
    for part in parts:
        left = args.budget_s - (time.perf_counter() - start)
        if part.estimate_s > left:
            record = {
                "name": part.name,
                "what": part.what,
                "argv": part.argv,
                "status": "skipped",
                "error": f"estimated {part.estimate_s:.0f} s, {max(left, 0):.0f} s of the budget left",
            }
        else:
            print(f"gpu-suite: {part.name} ({part.what}) ...", file=sys.stderr, flush=True)
            record = _run_part(part, args, out_dir / f"{stem}.{part.name}.json", left)
            print(record.get("tables") or f"gpu-suite: {part.name} {record['status']}: {record['error']}", flush=True)
        data["parts"].append(record)
        data["seconds"] = round(time.perf_counter() - start, 1)
        _write(args.json, data)
    missing = [f"{p['name']} ({p['status']})" for p in data["parts"] if p["status"] != "ok"]
    if missing:
        print(
            f"gpu-suite: {len(missing)} of {len(parts)} parts gave no figures: {', '.join(missing)}",
            file=sys.stderr,
            flush=True,
        )
    return data


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gpu-suite",
        help="every GPU figure the README lacks, in one call within a time budget",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument(
        "--dtype",
        default=None,
        choices=["float32", "bfloat16"],
        help="one dtype for every part (default: bfloat16, DETR float32)",
    )
    p.add_argument("--budget-s", type=float, default=540.0, help="seconds for the whole suite (default 540 = 9 min)")
    p.add_argument("--parts", nargs="+", default=None, help="run only these parts (default all, in order)")
    p.add_argument("--smoke", action="store_true", help="toy sizes: checks the suite itself (e.g. on a CPU)")
    p.add_argument("--json", metavar="PATH", default=None, help="write every part's figures here (and PATH.md)")
    p.set_defaults(func=gpu_suite)
