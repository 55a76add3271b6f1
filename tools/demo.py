#!/usr/bin/env python
"""The offline quickstart behind ``make demo``: train the quickstart ViT, CNN and non-local (pixel-attention)
ResNet on the built-in synthetic shapes task on this CPU, test each best checkpoint, print a comparison table and write
``runs/demo/results.json`` as ``{"<model>": {"top1": float, "train_seconds": float, "params": int}}``.

    python tools/demo.py [--configs configs/quickstart.yaml configs/quickstart_resnet.yaml] [--output-dir runs/demo]
"""

import argparse

from vision_attn.run.demo import DEFAULT_CONFIGS, run_demo


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    p.add_argument("--output-dir", default="runs/demo")
    args, overrides = p.parse_known_args(argv)
    return run_demo(args.configs, args.output_dir, overrides)


if __name__ == "__main__":
    main()
