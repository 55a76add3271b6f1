#!/usr/bin/env python
"""The attention explorer in your browser, offline on 127.0.0.1 (Gradio: pip install 'vision_attn[app]').

    python tools/app.py                                   # the models `make demo` trained (runs/demo/...)
    python tools/app.py --run runs/detr_shapes/version_0 --run runs/sagan_shapes
    python tools/app.py --model vit_tiny_patch16_224.augreg_in21k_ft_in1k --port 7861
    python tools/app.py --config configs/quickstart.yaml --ckpt runs/quickstart/version_0/checkpoints/best.ckpt

Tabs: Classify (a ViT: click a patch -> where it attends, per block and head, and the rollout), Detect (a DETR:
click a box -> its decoder cross-attention), Pixel attention (non-local / SASA nets: click a pixel), Generate (an
SA-GAN: class + seed -> a sample, click a pixel), CNN vs attention (a 3x3 conv as nine one-hot heads next to the
ViT's heads). Each model goes to the tab of its kind; a tab left empty takes its default run under --runs-root
(runs/demo/quickstart, runs/demo/quickstart_nonlocal, runs/detr_shapes, runs/sagan_shapes) or says how to train one.
A run folder is a version_N folder with config.yaml and checkpoints/best.ckpt, or the folder above (newest).
"""

import argparse
import os
import sys

from vision_attn.run.app import load_explorer
from vision_attn.run.app_ui import build_app, require_gradio, serve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", default=[], metavar="DIR", help="a run folder (repeatable)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help="a registered model, NAME or NAME.TAG (vision_attn.list_models())")
    which.add_argument("--config", help="the YAML config a checkpoint was trained with (with --ckpt)")
    p.add_argument("--ckpt", default=None, help="weights for --model / --config: path or URL")
    p.add_argument("--runs-root", default=".", help="where the default runs/... folders are looked for (default .)")
    p.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default 7860)")
    p.add_argument("--threshold", type=float, default=0.5, help="Detect: lowest score drawn at first (default 0.5)")
    args = p.parse_args(argv)
    if args.ckpt and not (args.model or args.config):
        p.error("--ckpt needs --model NAME or --config CFG")
    require_gradio()  # before minutes of loading: say at once when the extra is missing
    entries = [{"run": r} for r in args.run]
    if args.model or args.config:
        entries.append({"model": args.model, "config": args.config, "ckpt": args.ckpt})
    try:
        models, missing = load_explorer(entries, args.runs_root)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    for message in missing.values():
        print(message, file=sys.stderr)
    return serve(build_app(models, missing, args.threshold), args.port)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the server is closed and written out: skip tearing down torch and gradio (seconds to minutes)
