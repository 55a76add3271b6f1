"""``benchmark.py app``: how fast the attention explorer (``tools/app.py``) answers a click, per tab, on the demo
models. The explorer runs a model once per image and keeps what :func:`vision_attn.capture_attention` recorded; a
click then only slices those maps and draws the overlay. The peer is the same answer without that cache: a fresh
forward with capture, then the same slice and overlay. Goal: a click answered in <= 1 s on a CPU.

Models: the runs under ``--runs-root`` the explorer would load (``runs/demo/...``, ``runs/detr_shapes``,
``runs/sagan_shapes``); a missing one is replaced by its config's architecture at initial weights (the time does not
depend on the weights; the table says which). Gradio's own round trip (about tens of ms locally) is not included.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
import yaml
from PIL import Image

from .. import app as core
from .harness import Implementation, measure, prepare, summarize, table, write_json
from .results import write_results

__all__ = ["CONFIGS", "explorer_models", "click_benchmarks", "app_latency"]

# the config of each tab's default run (what stands in when the run is missing)
CONFIGS = {
    "classify": "configs/quickstart.yaml",
    "pixel": "configs/quickstart_nonlocal.yaml",
    "detect": "configs/detr_shapes.yaml",
    "generate": "configs/sagan_shapes.yaml",
}


def _untrained(kind: str, config: str) -> core.ExplorerModel:
    """The architecture of ``config`` at initial weights, fed ``[0, 1]`` tensors (no datamodule: nothing to prepare)."""
    from ...models import create_model

    args = yaml.safe_load(Path(config).read_text())["model"]["init_args"]
    extra = {"num_classes": 4} if kind == "detect" else {"num_classes": 10}  # shapes: 10 classes, boxes: 4
    net = create_model(args["model"], **{**extra, **(args.get("model_args") or {})}).eval()

    def to_tensor(im):
        return torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 255

    labels = {i: (i, str(i)) for i in range(4)} if kind == "detect" else None
    return core.ExplorerModel(kind, f"{args['model']} (initial weights)", net, to_tensor, labels=labels)


def explorer_models(runs_root: str = ".") -> Dict[str, core.ExplorerModel]:
    """Each tab's model: its default run under ``runs_root`` when there is one, else :func:`_untrained`."""
    models, _ = core.load_explorer([], runs_root)
    for kind in core.KINDS:
        if kind not in models:
            models[kind] = _untrained(kind, CONFIGS[kind])
    return models


def _clicks(hw: Tuple[int, int], n: int = 16) -> List[Tuple[int, int]]:
    rng = np.random.default_rng(0)
    return [(int(rng.integers(hw[0])), int(rng.integers(hw[1]))) for _ in range(n)]


def _pair(
    tab: str,
    view_fn: Callable[[], object],
    click_fn: Callable[[object, Tuple[int, int]], np.ndarray],
    hw: Tuple[int, int],
) -> List[Implementation]:
    """Ours: a click on the cached view; the peer: a forward first. Both cycle through the same clicks."""
    view, clicks, i = view_fn(), _clicks(hw), [0, 0]

    def cached() -> torch.Tensor:
        i[0] += 1
        return torch.from_numpy(np.array(click_fn(view, clicks[i[0] % len(clicks)])))  # a writable copy

    def fresh() -> torch.Tensor:
        i[1] += 1
        return torch.from_numpy(np.array(click_fn(view_fn(), clicks[i[1] % len(clicks)])))

    return [
        Implementation(tab, "click on cached maps", cached, ours=True),
        Implementation(tab, "forward + click (no cache)", fresh),
    ]


def click_benchmarks(models: Dict[str, core.ExplorerModel]) -> List[Implementation]:
    """The explorer's click handlers' computing, per tab (``CNN vs attention``: conv heads and the ViT's)."""
    samples = {n: np.asarray(Image.open(p).convert("RGB")) for n, p in core.sample_images().items()}
    cls, det, pix, gan = (models[k] for k in ("classify", "detect", "pixel", "generate"))
    impls = _pair(
        "Classify",
        lambda: core.classify(cls, samples["circle"]),
        lambda v, p: core.overlay(v.rgb, core.patch_attention(v, p, "rollout")[0]),
        (32, 32),
    )
    impls += _pair(
        "Detect",
        lambda: core.detect(det, samples["three_objects"], 0.0),
        lambda v, p: core.render_detections(v, core.box_at(v, p)),
        (72, 72),
    )

    def pixel_click(v, p):
        name = next(iter(v.weights))
        attn, cell, window = core.pixel_attention(v, name, p)
        return core.overlay(v.rgb, attn, [cell] + ([window] if window else []))

    impls += _pair("Pixel attention", lambda: core.pixel_forward(pix, samples["plus"]), pixel_click, (32, 32))
    impls += _pair(
        "Generate",
        lambda: core.generate(gan, 0 if gan.model.num_classes else None, 0),
        lambda v, p: core.overlay(v.rgb, core.generator_attention(v, p)[0]),
        (gan.model.img_size,) * 2,
    )
    layer = core.seeded_conv_attention(0)
    weights = core.conv_weights(layer, core.conv_input(torch.zeros(3, 32, 32)))

    def conv_click(v, p):
        conv = core.head_mosaic(v.rgb, core.conv_heads(weights, (32, 32), 3, p))
        return np.concatenate([conv.reshape(-1), core.head_mosaic(v.rgb, core.vit_heads(v, p), cols=4).reshape(-1)])

    impls += _pair("CNN vs attention", lambda: core.classify(cls, samples["circle"]), conv_click, (32, 32))
    return impls


def _model_name(m: core.ExplorerModel, runs_root: str) -> str:
    """``runs/demo/quickstart (VisionTransformer)``: the run relative to ``runs_root`` and the model's class."""
    name = m.name
    if Path(name).is_absolute() and Path(name).is_relative_to(Path(runs_root).resolve()):
        name = str(Path(name).relative_to(Path(runs_root).resolve()))
    return f"{name} ({type(m.model).__name__})"


def _result_rows(rows: List[Dict[str, object]], models: Dict[str, core.ExplorerModel], runs_root: str) -> List[Dict]:
    """The rows for ``results/app-<machine>.csv``: tab, implementation, model, median and IQR in ms."""
    kinds = {
        "Classify": "classify",
        "Detect": "detect",
        "Pixel attention": "pixel",
        "Generate": "generate",
        "CNN vs attention": "classify",
    }
    return [
        {
            "model": _model_name(models[kinds[str(r["benchmark"])]], runs_root),
            "tab": r["benchmark"],
            "implementation": r["implementation"],
            "median_ms": round(float(r["median_ms"]), 2),
            "iqr_ms": round(float(r["iqr_ms"]), 2),
        }
        for r in rows
    ]


def app_latency(args: argparse.Namespace) -> Dict[str, object]:
    """``benchmark.py app``: the table of click latencies per tab; ``--results DIR`` writes ``DIR/app-<machine>.csv``
    (:func:`.results.write_results`), ``--json`` everything."""
    args.device, args.dtype = "cpu", "float32"
    _, _, repeats, warmup, machine = prepare(args, "app", (0, 0), (20, 2))
    with torch.no_grad():
        models = explorer_models(args.runs_root)
        impls, rows = click_benchmarks(models), []
        for tab in dict.fromkeys(i.benchmark for i in impls):  # measure and summarize take one benchmark each
            pair = [i for i in impls if i.benchmark == tab]
            measure(pair, repeats, warmup, torch.device("cpu"))
            rows += summarize(pair)
    print(f"machine: {machine['cpu']}, {machine['torch_threads']} torch threads")
    print("models: " + ", ".join(f"{k}={m.name}" for k, m in models.items()))
    print(
        table(
            [
                ("tab", "---"),
                ("implementation", "---"),
                ("median ms", "---:"),
                ("IQR ms", "---:"),
                ("peer/ours", "---:"),
                ("<= 1 s", "---"),
            ],
            (
                [
                    r["benchmark"],
                    r["implementation"],
                    f"{r['median_ms']:.1f}",
                    f"{r['iqr_ms']:.1f}",
                    "ours" if r["ours"] else f"{r['peer_over_ours']:.1f}",
                    "yes" if r["median_ms"] <= 1000 else "NO",
                ]
                for r in rows
            ),
        )
    )
    if args.results:
        path = write_results("app", _result_rows(rows, models, args.runs_root), args.results, key=("tab", "model"))
        print(f"wrote {path}")
    result = {"machine": machine, "models": {k: m.name for k, m in models.items()}, "results": rows}
    if args.json:
        write_json(result, args.json)
    return result


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="the attention explorer: a click -> its map, per tab (goal <= 1 s on a CPU)")
    p.add_argument("--runs-root", default=".", help="where the explorer's default runs/... are (default .)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="untimed repeats first (default 2)")
    p.add_argument("--results", default=None, metavar="DIR", help="also write DIR/app-<machine>.csv (e.g. results)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write machine, models and results as JSON")
    p.set_defaults(func=app_latency)
