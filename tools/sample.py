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
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from vision_attn.attention import capture_attention  # noqa: E402
from vision_attn.run.viz.attention import plot_pixel_attention  # noqa: E402
from vision_attn.run.cli import VisionAttnCLI  # noqa: E402
from vision_attn.tasks.generation import save_image_grid  # noqa: E402


def _pixel(text: str):
    try:
        y, x = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"query pixel must be 'y,x' (two ints); got {text!r}") from None
    return y, x


def sample(config: str, ckpt: str, out: str, n: int = 64, labels=None, truncation=None, seed: int = 0, nrow=None,
           attention_out=None, query_pixels=None, attention_index: int = 0, standing_stats: int = 0, overrides=()) -> dict:
    """Write the grid (and the attention PNG); return ``{"grid": path, "attention": path or None, "labels": [...]}``."""
    cli = VisionAttnCLI(args=["--config", config, "--trainer.logger", "false", *overrides], run=False)
    task = cli.model
    task.load_weights(ckpt)
    model = task.model.eval()
    if standing_stats:
        model.recompute_ema_statistics(standing_stats, generator=torch.Generator().manual_seed(seed + 1))
    if labels is not None and len(labels) == 1:
        labels = labels[0]
    y = model.make_labels(n, labels)
    g = torch.Generator().manual_seed(seed)
    result = {"grid": None, "attention": None, "labels": None if y is None else y.tolist()}
    if attention_out:
        gen = model.sampler
        if gen.attention is None:
            raise SystemExit(f"{config}: the generator has no self-attention (g_attn_res=None): nothing to draw")
        with capture_attention(gen) as maps:
            images = model.sample(n, labels=y, truncation=truncation, generator=g, batch_size=max(n, 1))
        weights = maps["attention"]  # (n, heads, R*R, Nk)
        r, side = gen.attn_res, model.img_size
        if not 0 <= attention_index < n:
            raise SystemExit(f"--attention-index {attention_index} is outside the {n} samples")
        pixels = query_pixels or [(side // 4, side // 4), (side // 2, side // 2), (side // 4, 3 * side // 4), (3 * side // 4, side // 2)]
        for py, px in pixels:
            if not (0 <= py < side and 0 <= px < side):
                raise SystemExit(f"query pixel ({py}, {px}) is outside the {side}x{side} image")
        grid_pixels = [(py * r // side, px * r // side) for py, px in pixels]
        title = f"generator self-attention at {r}x{r}" + (f", class {int(y[attention_index])}" if y is not None else "")
        result["attention"] = str(plot_pixel_attention(weights, (r, r), grid_pixels, attention_out, image=images[attention_index],
                                                       batch_index=attention_index, title=title))
    else:
        images = model.sample(n, labels=y, truncation=truncation, generator=g)
    if nrow is None and y is not None and model.num_classes <= 16 and n % model.num_classes == 0 and labels is None:
        nrow = model.num_classes  # one class per column
    result["grid"] = str(save_image_grid(images, out, nrow=nrow))
    print(f"wrote {result['grid']}" + (f" and {result['attention']}" if result["attention"] else ""))
    return result


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
    p.add_argument("--query-pixels", type=_pixel, nargs="+", default=None, help="image pixels 'y,x' to draw attention for")
    p.add_argument("--attention-index", type=int, default=0, help="which sample's attention to draw")
    p.add_argument("--standing-stats", type=int, default=0, metavar="N",
                   help="re-estimate the generator's BatchNorm statistics over N random batches first (BigGAN)")
    args, overrides = p.parse_known_args(argv)
    if not os.path.isfile(args.config):
        p.error(f"config {args.config} does not exist")
    if args.n < 1:
        p.error(f"--n must be >= 1; got {args.n}")
    if args.truncation is not None and args.truncation <= 0:
        p.error(f"--truncation must be > 0; got {args.truncation}")
    return sample(args.config, args.ckpt, args.out, args.n, args.labels, args.truncation, args.seed, args.nrow,
                  args.attention_out, args.query_pixels, args.attention_index, args.standing_stats, overrides)


if __name__ == "__main__":
    main()
