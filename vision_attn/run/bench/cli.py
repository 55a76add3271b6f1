"""The command line of ``tools/benchmark.py``: the ``speed``, ``pixel``, ``data-size``, ``limit``, ``gpu-suite`` and
``results`` subcommands."""

from __future__ import annotations

import argparse
from typing import Dict, Optional, Sequence

from .app import add_parser as add_app
from .compiled import COMPILED_FAMILIES
from .gpu_suite import add_parser as add_gpu_suite
from .limit import add_parser as add_limit
from .pixel import pixel
from .results import add_parser as add_results
from .speed import speed

DESCRIPTION = "Benchmarks of vision_attn against its peers, measured in one process."


def _add_common(p: argparse.ArgumentParser, repeats: str, warmup: str) -> None:
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16 = autocast")
    p.add_argument("--repeats", type=int, default=None, help=f"timed repeats ({repeats})")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed repeats first ({warmup})")


def _add_tail(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write machine, config and results as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmark.py", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("speed", help="attention fwd+bwd and ViT-S/16 train step vs torch and timm")
    _add_common(p, "default 10 on cpu, 50 on cuda", "default 2 on cpu, 10 on cuda")
    p.add_argument("--attn-batch", type=int, default=32)
    p.add_argument("--vit-batch", type=int, default=None, help="default 8 on cpu, 64 on cuda")
    p.add_argument("--vit-img-size", type=int, default=224, help="smaller only for smoke tests (e.g. 32)")
    p.add_argument("--gan-batch", type=int, default=None, help="with --only gan: default 32 on cpu, 256 on cuda")
    p.add_argument(
        "--gan-config", default="configs/sagan_shapes.yaml", help="with --only gan: the GAN config whose model is timed"
    )
    p.add_argument(
        "--only",
        choices=["attention", "vit", "detr", "models", "gan", "compiled"],
        default=None,
        help="one benchmark; detr (DETR-R50 inference and train step vs transformers'), models (every "
        "registered classifier vs timm's) and gan (SA-GAN step, NCHW vs channels-last) run only when named",
    )
    p.add_argument(
        "--compiled-families",
        nargs="+",
        choices=list(COMPILED_FAMILIES),
        default=list(COMPILED_FAMILIES),
        help="with --only compiled: whose training step is timed eager vs torch.compile",
    )
    p.add_argument(
        "--compiled-batch", type=int, default=None, help="with --only compiled: default 4 on cpu, 64 on cuda"
    )
    p.add_argument("--compiled-img-size", type=int, default=64, help="with --only compiled: ViT and DETR image side")
    p.add_argument("--compile-backend", default="inductor", help="with --only compiled: torch.compile backend")
    p.add_argument("--models", nargs="+", default=["*"], help="with --only models: registry patterns (default all)")
    p.add_argument("--models-batch", type=int, default=None, help="with --only models: default 8 on cpu, 128 on cuda")
    p.add_argument(
        "--models-modes",
        nargs="+",
        choices=["train", "inference"],
        default=["train", "inference"],
        help="with --only models: which steps to time (default both)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="with --only models: torch.compile ours and timm's; "
        "alone (no --only): the compiled suite, = --only compiled",
    )
    p.add_argument("--channels-last", action="store_true", help="with --only models: channels-last images and weights")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="accelerator peak for MFU (default 989 = H100 dense bf16 when --device cuda --dtype bfloat16)",
    )
    p.add_argument("--detr-batch", type=int, default=None, help="DETR images per step (default 2 on cpu, 4 on cuda)")
    p.add_argument(
        "--detr-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="DETR image size (default 320 427 on cpu, 800 1066 on cuda)",
    )
    _add_tail(p)
    p.set_defaults(func=speed)

    p = sub.add_parser("pixel", help="global and local pixel attention: time and peak memory vs naive peers")
    _add_common(p, "default 3 on cpu, 20 on cuda", "default 1 on cpu, 5 on cuda")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--global-sizes", type=int, nargs="+", default=[16, 32, 64, 96], help="square map sides")
    p.add_argument("--local-sizes", type=int, nargs="+", default=[32, 64, 128], help="square map sides")
    p.add_argument(
        "--kernel-sizes",
        type=int,
        nargs="+",
        default=[8, 32, 56],
        help="square map sides of the kernels tables (LocalSelfAttention2d's halo / unfold / flex)",
    )
    p.add_argument(
        "--kernel-shapes",
        choices=["sizes", "sasa"],
        default="sizes",
        help="the kernels tables' layers: sizes = --kernel-sizes at --batch/--channels; "
        "sasa = sasa_resnet26's own (batch, channels, size) per stage",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=["global", "local", "kernels", "kernels-inference"],
        default=None,
        help="some tables (default all): kernels = the local layer's own kernels, fwd+bwd; "
        "kernels-inference = forward alone",
    )
    _add_tail(p)
    p.set_defaults(func=pixel)

    p = sub.add_parser(
        "data-size",
        help="attention vs CNN test top-1 at varying training-set sizes (resumable sweep of Lightning fits)",
        description="Arguments it does not know (--trainer.devices 4, --data.init_args.root /data) go to every cell's "
        "LightningCLI.",
    )
    p.add_argument("--config", required=True, help="a sweep YAML, e.g. configs/benchmark/data_size_quick.yaml")
    p.add_argument("--output-dir", required=True, help="results.csv, data_size.png, data_size.md and cells/ go here")
    p.add_argument(
        "--parallel-cells",
        type=int,
        default=1,
        help="cells run at once: one per GPU when GPUs are visible (each cell then on 1 device)",
    )
    p.add_argument(
        "--print-cells",
        action="store_true",
        help="run nothing: print the command of every cell still to run (to submit as cluster jobs); a "
        "later run collects their results",
    )
    p.add_argument(
        "--launcher",
        choices=["local", "slurm", "submitit-local"],
        default="local",
        help="local: a process pool on this machine (--parallel-cells); slurm: the remaining cells as one "
        "submitit job array; submitit-local: the same path through submitit's LocalExecutor",
    )
    p.add_argument("--array-parallelism", type=int, default=8, help="with --launcher slurm: array tasks at once")
    p.add_argument("--partition", default=None, help="with --launcher slurm: the SLURM partition")
    p.add_argument(
        "--time",
        type=int,
        default=60,
        metavar="MINUTES",
        help="with --launcher slurm/submitit-local: time limit of one cell",
    )
    p.add_argument("--gpus-per-node", type=int, default=0, help="with --launcher slurm: GPUs per cell and node")
    p.add_argument("--nodes", type=int, default=1, help="with --launcher slurm: nodes per cell")
    p.set_defaults(func=data_size)

    add_limit(sub, _add_common, _add_tail)
    add_gpu_suite(sub)
    add_results(sub)
    add_app(sub)
    return parser


def data_size(args: argparse.Namespace) -> Dict[str, object]:
    """The data-size sweep (``vision_attn.run.data_size``): cells, results.csv, data_size.png / .md."""
    from vision_attn.run.data_size import run_sweep
    from vision_attn.run.data_size.journal import ResultsFileError
    from vision_attn.run.data_size.runner import SweepLockedError

    try:
        return _data_size(args, run_sweep)
    except (SweepLockedError, ResultsFileError) as err:  # the message names the folder or file and line: one line
        raise SystemExit(f"error: {err}") from None


def _data_size(args: argparse.Namespace, run_sweep) -> Dict[str, object]:
    if args.print_cells:
        return {"commands": run_sweep(args.config, args.output_dir, extra_args=args.cell_args, print_cells=True)}
    launcher = None
    if args.launcher != "local":
        launcher = {
            "cluster": "slurm" if args.launcher == "slurm" else "local",
            "time_min": args.time,
            "array_parallelism": args.array_parallelism,
            "partition": args.partition,
            "gpus_per_node": args.gpus_per_node,
            "nodes": args.nodes,
        }
    rows = run_sweep(
        args.config, args.output_dir, extra_args=args.cell_args, parallel_cells=args.parallel_cells, launcher=launcher
    )
    print(open(f"{args.output_dir}/data_size.md").read())
    return {"results": rows}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its data (what ``--json`` writes)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "data-size":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.cell_args = rest
    return args.func(args)
