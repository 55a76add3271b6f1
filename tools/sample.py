#!/usr/bin/env python
"""Sample a trained GAN into a PNG grid, and optionally draw where its self-attention looks (SAGAN Fig. 1).

    python tools/sample.py --config configs/sagan_shapes.yaml --ckpt runs/sagan_shapes/version_0/checkpoints/last.ckpt \
        --n 64 --out grid.png
    python tools/sample.py --config configs/sagan_cifar10.yaml --ckpt last.ckpt --n 100 --labels 3 --truncation 1.0 --out cats.png
    python tools/sample.py --config configs/sagan_shapes.yaml --ckpt last.ckpt --n 8 --out grid.png \
        --attention-out attn.png --query-pixels 8,8 16,16 24,8

``--labels``: one class for all samples, or ``n`` classes (default: classes cycle 0, 1, 2, ...; conditional models
only). ``--truncation t`` redraws noise entries beyond +-t (BigGAN's truncation trick). Samples come from the EMA
generator when the checkpoint has one. ``--query-pixels y,x ...`` are image pixels; the attention map is drawn on
the generator's attention grid (``g_attn_res``) for the image ``--attention-index`` of the batch. Extra arguments
go to the config (``--data.init_args.root /datasets``).
"""

import argparse
import os

from vision_attn.run.sample import sample
from vision_attn.run.viz import query_pixel


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="the YAML config the GAN was trained with")
    p.add_argument("--ckpt", required=True, help="checkpoint (Lightning .ckpt or SAGAN state dict)")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument("--labels", type=int, nargs="+", default=None, help="one class for all, or n classes")
    p.add_argument("--truncation", type=float, default=None, help="truncation threshold t > 0 (default: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nrow", type=int, default=None, help="images per grid row")
    p.add_argument("--out", default="samples.png", help="the grid PNG")
    p.add_argument("--attention-out", default=None, help="also draw the generator's attention maps into this PNG")
    p.add_argument(
        "--query-pixels", type=query_pixel, nargs="+", default=None, help="image pixels 'y,x' to draw attention for"
    )
    p.add_argument("--attention-index", type=int, default=0, help="which sample's attention to draw")
    p.add_argument(
        "--standing-stats",
        type=int,
        default=0,
        metavar="N",
        help="re-estimate the generator's BatchNorm statistics over N random batches first (BigGAN)",
    )
    args, overrides = p.parse_known_args(argv)
    if not os.path.isfile(args.config):
        p.error(f"config {args.config} does not exist")
    if args.n < 1:
        p.error(f"--n must be >= 1; got {args.n}")
    if args.truncation is not None and args.truncation <= 0:
        p.error(f"--truncation must be > 0; got {args.truncation}")
    try:
        return sample(
            args.config,
            args.ckpt,
            args.out,
            args.n,
            args.labels,
            args.truncation,
            args.seed,
            args.nrow,
            args.attention_out,
            args.query_pixels,
            args.attention_index,
            args.standing_stats,
            overrides,
        )
    except ValueError as e:  # bad labels, pixels or index: one line, as argparse errors
        raise SystemExit(f"tools/sample.py: {e}") from None


if __name__ == "__main__":
    main()
