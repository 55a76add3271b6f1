"""The attention explorer's browser UI (Gradio, the ``[app]`` extra): five tabs over the plain functions of
:mod:`vision_attn.run.app`. Served on 127.0.0.1 only, without share links, telemetry or fetches from the web.

No ``from __future__ import annotations`` here: Gradio finds the ``evt: gr.SelectData`` argument of a click handler
by its evaluated annotation."""

import os
import signal
import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from . import app as core
from .viz.style import to_display_rgb

__all__ = ["GRADIO_MISSING", "require_gradio", "build_app", "serve"]

GRADIO_MISSING = "error: the explorer needs Gradio: pip install 'vision_attn[app]'"
HOST = "127.0.0.1"
# small model inputs (32 px) drawn large and sharp
CSS = ".pixelated img { image-rendering: pixelated; min-height: 200px; object-fit: contain; }"


def require_gradio():
    """The ``gradio`` module (telemetry off), or ``SystemExit`` with one line saying how to install it."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no telemetry, no version check
    try:
        import gradio
    except ImportError:
        raise SystemExit(GRADIO_MISSING) from None
    return gradio


def _samples(names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    found = core.sample_images()
    return {n: np.asarray(Image.open(p).convert("RGB")) for n, p in found.items() if names is None or n in names}


def _click(evt: Any, shown: np.ndarray, hw: Tuple[int, int]) -> Tuple[int, int]:
    """A Gradio select event on the drawn image ``shown`` -> the ``(y, x)`` input pixel."""
    return core.display_to_input(evt.index, shown.shape[:2], hw)


def _head(choice: str) -> Any:
    return "mean" if choice in (None, "mean") else int(str(choice).split()[-1])


def _layer(choice: str) -> Any:
    return "rollout" if choice in (None, "rollout") else int(str(choice).split()[-1])


def _picture_inputs(gr, samples: Dict[str, np.ndarray], default: str, kind: str):
    """An upload box (``#<kind>-input``) and a bundled-sample chooser that fills it."""
    with gr.Column():
        image = gr.Image(
            value=samples.get(default),
            type="numpy",
            sources=["upload"],
            label="image",
            format="png",
            elem_id=f"{kind}-input",
            elem_classes="pixelated",
        )
        pick = gr.Dropdown(
            list(samples),
            value=default if default in samples else None,
            label="or a bundled sample",
            elem_id=f"{kind}-sample",
        )
    pick.change(lambda n: samples.get(n), pick, image)
    return image


def _classify_tab(gr, demo, m: core.ExplorerModel, samples) -> None:
    n_layers = len([k for k in m.model.blocks])
    heads = m.model.blocks[0].attn.num_heads
    gr.Markdown(
        f"**{m.name}**: click a patch of the middle image: where that patch's query attends "
        "(one block and head, their mean, or the rollout through all blocks)."
    )
    with gr.Row():
        image = _picture_inputs(gr, samples, "circle", "classify")
        with gr.Column():
            shown = gr.Image(
                type="numpy",
                interactive=False,
                label="attention (click a patch)",
                format="png",
                elem_id="classify-overlay",
                show_label=False,
            )
            where = gr.Markdown(elem_id="classify-where")
        with gr.Column():
            layer = gr.Dropdown(["rollout"] + [f"block {i}" for i in range(n_layers)], value="rollout", label="layer")
            head = gr.Dropdown(["mean"] + [f"head {h}" for h in range(heads)], value="mean", label="head")
            top = gr.Label(num_top_classes=5, label="top-5")
    state = gr.State()

    def show(view, pixel, layer_c, head_c):
        attn, cell = core.patch_attention(view, pixel, _layer(layer_c), _head(head_c))
        box = core.cell_box(cell, view.grid, tuple(view.x.shape[-2:]))
        heads = "mean over heads" if layer_c == "rollout" else head_c
        text = f"query patch {cell} at input pixel {tuple(pixel)}; {layer_c}, {heads}"
        return core.overlay(view.rgb, attn, [box]), text, (view, pixel)

    def run(picture, layer_c, head_c):
        if picture is None:
            return None, "", None, None
        view = core.classify(m, picture)
        H, W = view.x.shape[-2:]
        img, text, st = show(view, (H // 2, W // 2), layer_c, head_c)
        return img, text, {name: p for name, p in view.top}, st

    def click(st, shown_img, layer_c, head_c, evt: gr.SelectData):
        if st is None:
            return gr.skip(), gr.skip(), st
        view, _ = st
        return show(view, _click(evt, shown_img, tuple(view.x.shape[-2:])), layer_c, head_c)

    def restyle(st, layer_c, head_c):
        return (gr.skip(), gr.skip(), st) if st is None else show(st[0], st[1], layer_c, head_c)

    for trigger in (image.change, demo.load):  # the sample shown at first is drawn at once
        trigger(run, [image, layer, head], [shown, where, top, state])
    shown.select(click, [state, shown, layer, head], [shown, where, state])
    for control in (layer, head):
        control.change(restyle, [state, layer, head], [shown, where, state])


def _detect_tab(gr, demo, m: core.ExplorerModel, samples, threshold: float) -> None:
    heads = max(mod.num_heads for name, mod in m.model.named_modules() if name.endswith("multihead_attn"))
    gr.Markdown(f"**{m.name}**: click a box: where its object query looks (the last decoder layer's cross-attention).")
    with gr.Row():
        image = _picture_inputs(gr, samples, "three_objects", "detect")
        with gr.Column():
            shown = gr.Image(
                type="numpy",
                interactive=False,
                label="detections (click a box)",
                format="png",
                elem_id="detect-overlay",
                show_label=False,
            )
            where = gr.Markdown(elem_id="detect-where")
        with gr.Column():
            thr = gr.Slider(0.0, 1.0, value=threshold, step=0.05, label="score threshold")
            head = gr.Dropdown(["mean"] + [f"head {h}" for h in range(heads)], value="mean", label="head")
    state = gr.State()

    def run(picture, t):
        if picture is None:
            return None, "", None
        view = core.detect(m, picture, t)
        text = f"{len(view.boxes)} detections >= {t:.2f}" + ("" if len(view.boxes) else ": lower the threshold")
        return core.render_detections(view), text, (view, None)

    def show(st, head_c):
        view, k = st
        if k is None:
            return core.render_detections(view), "click a box", st
        text = f"detection {k}: {view.names[k]} {view.scores[k]:.2f} (query {view.queries[k]}), {head_c}"
        return core.render_detections(view, k, _head(head_c)), text, st

    def click(st, shown_img, head_c, evt: gr.SelectData):
        if st is None:
            return gr.skip(), gr.skip(), st
        view = st[0]
        k = core.box_at(view, _click(evt, shown_img, tuple(view.x.shape[-2:])))
        return show((view, k), head_c)

    for trigger in (image.change, thr.release, demo.load):
        trigger(run, [image, thr], [shown, where, state])
    shown.select(click, [state, shown, head], [shown, where, state])
    head.change(
        lambda st, h: (gr.skip(), gr.skip(), st) if st is None else show(st, h), [state, head], [shown, where, state]
    )


def _heads(gr, n: int):
    return gr.Dropdown(["mean"] + [f"head {h}" for h in range(n)], value="mean", label="head")


def _pixel_tab(gr, demo, m: core.ExplorerModel, samples) -> None:
    from ..layers import LocalSelfAttention2d, NonLocalBlock2d

    blocks = {n: mod for n, mod in m.model.named_modules() if isinstance(mod, (LocalSelfAttention2d, NonLocalBlock2d))}
    gr.Markdown(
        f"**{m.name}**: click a pixel: where it attends in each pixel-attention block (for a local window, "
        "the window is drawn in red)."
    )
    with gr.Row():
        image = _picture_inputs(gr, samples, "plus", "pixel")
        with gr.Column():
            shown = gr.Image(
                type="numpy",
                interactive=False,
                label="attention (click a pixel)",
                format="png",
                elem_id="pixel-overlay",
                show_label=False,
            )
            where = gr.Markdown(elem_id="pixel-where")
        with gr.Column():
            block = gr.Dropdown(list(blocks), value=next(iter(blocks)), label="block")
            head = _heads(gr, max(b.num_heads for b in blocks.values()))
            top = gr.Label(num_top_classes=5, label="top-5")
    state = gr.State()

    def show(view, pixel, block_c, head_c):
        h = _head(head_c)
        if h != "mean" and h >= view.weights[block_c].shape[0]:
            h = "mean"  # this block has fewer heads
        attn, cell, window = core.pixel_attention(view, block_c, pixel, h)
        grid = view.grids[block_c]
        text = (
            f"{block_c}: query pixel {tuple(pixel)} on its {grid[0]}x{grid[1]} grid, "
            + ("global" if window is None else f"{view.kernels[block_c]}x{view.kernels[block_c]} window")
            + f", {h}"
        )
        return core.overlay(view.rgb, attn, [cell] + ([window] if window else [])), text, (view, pixel)

    def run(picture, block_c, head_c):
        if picture is None:
            return None, "", None, None
        view = core.pixel_forward(m, picture)
        H, W = view.x.shape[-2:]
        img, text, st = show(view, (H // 2, W // 2), block_c, head_c)
        return img, text, {name: p for name, p in view.top}, st

    def click(st, shown_img, block_c, head_c, evt: gr.SelectData):
        if st is None:
            return gr.skip(), gr.skip(), st
        return show(st[0], _click(evt, shown_img, tuple(st[0].x.shape[-2:])), block_c, head_c)

    for trigger in (image.change, demo.load):
        trigger(run, [image, block, head], [shown, where, top, state])
    shown.select(click, [state, shown, block, head], [shown, where, state])
    for control in (block, head):
        control.change(
            lambda st, b, h: (gr.skip(), gr.skip(), st) if st is None else show(st[0], st[1], b, h),
            [state, block, head],
            [shown, where, state],
        )


def _generate_tab(gr, demo, m: core.ExplorerModel) -> None:
    gan = m.model
    gr.Markdown(
        f"**{m.name}**: pick a class and a seed, then click a pixel of the sample: where the generator's "
        f"self-attention looks from there ({gan.sampler.attn_res}x{gan.sampler.attn_res} grid)."
    )
    with gr.Row():
        with gr.Column():
            label = gr.Dropdown(
                [str(c) for c in range(gan.num_classes)], value="0", label="class", visible=bool(gan.num_classes)
            )
            seed = gr.Number(value=0, precision=0, label="seed")
            go = gr.Button("Generate", elem_id="generate-button")
        with gr.Column():
            shown = gr.Image(
                type="numpy",
                interactive=False,
                label="sample (click a pixel)",
                format="png",
                elem_id="generate-overlay",
                show_label=False,
            )
            where = gr.Markdown(elem_id="generate-where")
        head = _heads(gr, gan.sampler.attention.num_heads)
    state = gr.State()

    def show(view, pixel, head_c):
        if pixel is None:
            return core.overlay(view.rgb), "click a pixel", (view, None)
        attn, cell = core.generator_attention(view, pixel, _head(head_c))
        return core.overlay(view.rgb, attn, [cell]), f"query pixel {tuple(pixel)}, {head_c}", (view, pixel)

    def run(label_c, seed_v, head_c):
        view = core.generate(m, int(label_c) if gan.num_classes else None, int(seed_v or 0))
        return show(view, None, head_c)

    def click(st, shown_img, head_c, evt: gr.SelectData):
        if st is None:
            return gr.skip(), gr.skip(), st
        return show(st[0], _click(evt, shown_img, st[0].rgb.shape[:2]), head_c)

    for trigger in (go.click, demo.load):
        trigger(run, [label, seed, head], [shown, where, state])
    shown.select(click, [state, shown, head], [shown, where, state])
    head.change(
        lambda st, h: (gr.skip(), gr.skip(), st) if st is None else show(st[0], st[1], h),
        [state, head],
        [shown, where, state],
    )


def _conv_widgets(gr, vit: Optional[core.ExplorerModel], samples):
    """The CNN-vs-attention tab's widgets: input, clickable picture, ViT block, conv heads, ViT heads."""
    with gr.Row():
        image = _picture_inputs(gr, samples, "circle", "conv")
        with gr.Column():
            picture = gr.Image(
                type="numpy",
                interactive=False,
                label="click a pixel",
                format="png",
                elem_id="conv-picture",
                show_label=False,
            )
            block = gr.Dropdown(
                [f"block {i}" for i in range(len(vit.model.blocks))] if vit else [],
                label="ViT block",
                value=f"block {len(vit.model.blocks) - 1}" if vit else None,
                visible=vit is not None,
            )
    with gr.Row():
        conv_out = gr.Image(
            type="numpy",
            interactive=False,
            label="3x3 conv as attention: nine heads (9x9 pixels around the query)",
            format="png",
            elem_id="conv-heads",
        )
        vit_out = gr.Image(
            type="numpy",
            interactive=False,
            label="trained ViT: its heads",
            format="png",
            elem_id="vit-heads",
            visible=vit is not None,
        )
    return image, picture, block, conv_out, vit_out


def _conv_tab(gr, demo, vit: Optional[core.ExplorerModel], samples, conv_seed: int) -> None:
    layer = core.seeded_conv_attention(conv_seed)
    offsets = [tuple(o) for o in layer.offsets.detach().round().int().tolist()]
    gr.Markdown(
        "A 3x3 convolution is self-attention with nine heads, each one-hot on one offset of the window "
        "(`attention_from_conv`). Click a pixel: the nine heads, laid out like the kernel "
        f"(offsets {offsets}), next to the heads of the trained ViT for the patch there."
    )
    image, picture, block, conv_out, vit_out = _conv_widgets(gr, vit, samples)
    if vit is None:
        gr.Markdown("No ViT to compare with: " + core.missing_message("classify", core.DEFAULT_RUNS["classify"]))
    state = gr.State()

    cache: Dict[Tuple[int, int], Any] = {}  # conv attention by image size (positional heads)

    def show(st, pixel, block_c):
        x, rgb, view = st
        small = core.conv_input(x)
        if tuple(small.shape[-2:]) not in cache:
            cache[tuple(small.shape[-2:])] = core.conv_weights(layer, small)
        conv = core.conv_panel(layer, cache[tuple(small.shape[-2:])], small, tuple(x.shape[-2:]), pixel)
        vit_mosaic = None if view is None else core.vit_panel(view, pixel, _layer(block_c))
        mark = [(pixel[0], pixel[1], pixel[0] + 1, pixel[1] + 1)]
        return core.overlay(rgb, marks=mark), conv, vit_mosaic, (x, rgb, view, pixel)

    def run(pic, block_c):
        if pic is None:
            return None, None, None, None
        view = core.classify(vit, pic) if vit is not None else None
        x = view.x if view is not None else core.conv_input(pic)
        rgb = view.rgb if view is not None else to_display_rgb(x).numpy()
        H, W = x.shape[-2:]
        return show((x, rgb, view), (H // 2, W // 2), block_c)

    def click(st, shown_img, block_c, evt: gr.SelectData):
        if st is None:
            return gr.skip(), gr.skip(), gr.skip(), st
        return show(st[:3], _click(evt, shown_img, tuple(st[0].shape[-2:])), block_c)

    for trigger in (image.change, demo.load):
        trigger(run, [image, block], [picture, conv_out, vit_out, state])
    picture.select(click, [state, picture, block], [picture, conv_out, vit_out, state])
    block.change(
        lambda st, b: (gr.skip(),) * 3 + (st,) if st is None else show(st[:3], st[3], b),
        [state, block],
        [picture, conv_out, vit_out, state],
    )


def build_app(
    models: Dict[str, core.ExplorerModel], missing: Dict[str, str], threshold: float = 0.5, conv_seed: int = 0
):
    """The Gradio ``Blocks`` of the explorer: a tab per kind (its message when its model is missing) and the
    CNN-vs-attention tab."""
    gr = require_gradio()
    samples = _samples()
    tabs = [
        ("Classify", "classify", lambda: _classify_tab(gr, demo, models["classify"], samples)),
        ("Detect", "detect", lambda: _detect_tab(gr, demo, models["detect"], samples, threshold)),
        ("Pixel attention", "pixel", lambda: _pixel_tab(gr, demo, models["pixel"], samples)),
        ("Generate", "generate", lambda: _generate_tab(gr, demo, models["generate"])),
    ]
    with gr.Blocks(title="vision_attn: see attention", analytics_enabled=False) as demo:
        gr.Markdown("## vision_attn: see attention")
        with gr.Tabs():
            for title, kind, make in tabs:
                with gr.Tab(title, id=kind):
                    if kind in models:
                        make()
                    else:
                        gr.Markdown(missing.get(kind, f"No {kind} model loaded."), elem_id=f"{kind}-missing")
            with gr.Tab("CNN vs attention", id="conv"):
                _conv_tab(gr, demo, models.get("classify"), samples, conv_seed)
    return demo


def serve(demo, port: int = 7860) -> int:
    """Serve ``demo`` on 127.0.0.1:``port`` until SIGTERM or SIGINT, then close it; returns 0."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    demo.queue(default_concurrency_limit=1).launch(
        server_name=HOST,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=True,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        quiet=True,
        css=CSS,
    )
    print(f"the explorer is at http://{HOST}:{port} (Ctrl+C or SIGTERM stops it)", flush=True)
    while not stop.wait(0.5):
        pass
    demo.close()
    print("the explorer stopped", flush=True)
    return 0
