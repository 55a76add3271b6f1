"""The attention explorer's computing (``tools/app.py``): load the models, find where a clicked location attends,
render overlays as ``uint8`` RGB arrays. Plain functions without Gradio; the browser UI (:mod:`.app_ui`) calls them.

Each tab holds one loaded model (:class:`ExplorerModel`): a ViT (**classify**), a DETR (**detect**), a net with
non-local / SASA blocks (**pixel**), an SA-GAN (**generate**). The maps are the weights
:func:`vision_attn.capture_attention` records during one forward, cached per image, so a click only slices them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor, nn

from ..attention import capture_attention
from ..layers import ConvAttention2d, LocalSelfAttention2d, NonLocalBlock2d, attention_from_conv
from ..metrics.coco import detr_postprocess
from ..models import create_model
from ..models.detr import DETR
from ..models.registry import split_model_name
from ..models.sagan import SAGAN
from ..models.vit import VisionTransformer
from .cli import load_task
from .predict import _eval_transform, _normalization, load_predictor
from .runs import resolve_run
from .viz.attention import pixel_attention_maps
from .viz.boxes import last_cross_attention
from .viz.overlays import attention_rollout, query_grid_size, to_query_grid, vit_block_maps
from .viz.style import ATTENTION_CMAP, BOX_COLORS, to_display_rgb

__all__ = [
    "KINDS",
    "DEFAULT_RUNS",
    "HOW_TO_GET",
    "ExplorerModel",
    "load_model",
    "load_explorer",
    "missing_message",
    "sample_images",
    "overlay",
    "display_to_input",
    "cell_box",
    "ClassifyView",
    "classify",
    "patch_attention",
    "DetectView",
    "detect",
    "box_at",
    "query_attention",
    "render_detections",
    "PixelView",
    "pixel_forward",
    "pixel_attention",
    "GenerateView",
    "generate",
    "generator_attention",
    "seeded_conv_attention",
    "conv_input",
    "conv_weights",
    "conv_heads",
    "vit_heads",
    "head_mosaic",
]

KINDS = ("classify", "detect", "pixel", "generate")
# where `make demo` (classify, pixel) and the configs' own default_root_dir (detect, generate) leave their runs
DEFAULT_RUNS = {
    "classify": "runs/demo/quickstart",
    "pixel": "runs/demo/quickstart_nonlocal",
    "detect": "runs/detr_shapes",
    "generate": "runs/sagan_shapes",
}
HOW_TO_GET = {
    "classify": "make demo",
    "pixel": "make demo",
    "detect": "python tools/train.py fit --config configs/detr_shapes.yaml",
    "generate": "python tools/train.py fit --config configs/sagan_shapes.yaml",
}
CONV_SIDE = 32  # the largest side the conv-as-attention tab computes at
DISPLAY = 256  # the shorter side of a drawn overlay, in screen pixels
Cell = Tuple[int, int]
# capture_attention sets hooks on the model's modules for one forward: two at once (two browser tabs) would mix them
_FORWARD = threading.Lock()


# ---- loading ---------------------------------------------------------------------------------------------------
@dataclass
class ExplorerModel:
    """One loaded model and how to feed it: ``transform`` PIL RGB -> ``(3, H, W)``; ``stats`` its ``(mean, std)``;
    ``labels`` class names by label (classify, pixel, generate) or label -> ``(category id, name)`` (detect)."""

    kind: str
    name: str
    model: nn.Module
    transform: Optional[Callable[[Image.Image], Tensor]] = None
    stats: Tuple[Any, Any] = (None, None)
    labels: Any = None


def _task_class(config: str) -> str:
    import yaml

    model = (yaml.safe_load(Path(config).expanduser().read_text()) or {}).get("model") or {}
    return str(model.get("class_path", "")) if isinstance(model, dict) else ""


def _kind(net: nn.Module) -> str:
    if isinstance(net, SAGAN):
        return "generate"
    if isinstance(net, DETR):
        return "detect"
    if isinstance(net, VisionTransformer):
        return "classify"
    if any(isinstance(m, (NonLocalBlock2d, LocalSelfAttention2d)) for m in net.modules()):
        return "pixel"
    raise ValueError(
        f"{type(net).__name__} has no attention the explorer draws: it takes a ViT, a DETR, a net with "
        "non-local or SASA blocks, or an SA-GAN"
    )


def load_model(
    model: Optional[str] = None, config: Optional[str] = None, ckpt: Optional[str] = None, run: Optional[str] = None
) -> ExplorerModel:
    """A registered ``model`` (``NAME[.TAG]``, weights ``ckpt`` else its published ones), a training ``config``
    (with ``ckpt``) or a ``run`` folder (:func:`vision_attn.run.runs.resolve_run`: its config.yaml and best
    checkpoint); its tab follows from what it is (:func:`_kind`)."""
    if run is not None:
        config, ckpt = (str(p) for p in resolve_run(run))
    name = str(run or model or ckpt or config)
    if model is not None and split_model_name(model)[0].startswith("sagan"):
        net = create_model(model, pretrained=ckpt if ckpt else True)
        return ExplorerModel("generate", name, net.eval(), labels=list(range(net.num_classes)))
    if config is not None and _task_class(config).endswith("GenerationTask"):
        task, _, _ = load_task(config, ckpt)
        return ExplorerModel("generate", name, task.model.eval(), labels=list(range(task.model.num_classes)))
    p = load_predictor(model, config, ckpt)
    net = p.model.eval()
    transform = _eval_transform(net, p.datamodule)
    return ExplorerModel(_kind(net), name, net, transform, _normalization(transform), p.labels)


def load_explorer(
    entries: Sequence[Mapping[str, Optional[str]]] = (), runs_root: Union[str, Path] = "."
) -> Tuple[Dict[str, ExplorerModel], Dict[str, str]]:
    """The models of each tab: ``entries`` (``load_model`` keyword dicts) first, then for every tab still empty its
    default run under ``runs_root`` (:data:`DEFAULT_RUNS`). Returns ``(models by kind, message by missing kind)``:
    a default run that is missing or cannot be loaded leaves its tab with a message; an entry's error is raised."""
    models: Dict[str, ExplorerModel] = {}
    for entry in entries:
        m = load_model(**entry)
        models[m.kind] = m
    missing: Dict[str, str] = {}
    for kind in KINDS:
        if kind in models:
            continue
        run = Path(runs_root) / DEFAULT_RUNS[kind]
        try:
            models[kind] = load_model(run=str(run))
        except FileNotFoundError:
            missing[kind] = missing_message(kind, run)
        except (Exception, SystemExit) as err:  # jsonargparse exits on a config it cannot read
            missing[kind] = f"No {kind} model: {run} could not be loaded ({type(err).__name__}: {err}). " + (
                f"Train it again with `{HOW_TO_GET[kind]}` or start the explorer with --run DIR / --model NAME[.TAG]."
            )
    return models, missing


def missing_message(kind: str, run: Union[str, Path]) -> str:
    """What to run to get the model of tab ``kind`` whose default run folder ``run`` is missing."""
    return (
        f"No {kind} model: {run} has no trained run. Get one with `{HOW_TO_GET[kind]}` (offline, on this CPU), or "
        f"start the explorer with --run DIR / --model NAME[.TAG] / --config CFG --ckpt CKPT."
    )


def sample_images() -> Dict[str, Path]:
    """The bundled sample images (PNG, rendered from the built-in synthetic shapes), by name."""
    folder = Path(__file__).with_name("app_samples")
    return {p.stem: p for p in sorted(folder.glob("*.png"))}


# ---- drawing ---------------------------------------------------------------------------------------------------
def _scale(hw: Tuple[int, int], display: int = DISPLAY) -> int:
    return max(1, math.ceil(display / min(hw)))


def overlay(
    rgb: np.ndarray,
    attn: Optional[Tensor] = None,
    marks: Sequence[Tuple[float, float, float, float]] = (),
    boxes: Sequence[Tuple[Sequence[float], str, str]] = (),
    display: int = DISPLAY,
    alpha: float = 0.6,
) -> np.ndarray:
    """``rgb (H, W, 3)`` in [0, 1] with ``attn (h, w)`` over it (nearest-upsampled, scaled to its max, inferno),
    red rectangles ``marks`` and labelled ``boxes`` ``((x0, y0, x1, y1), colour, text)``, all in input pixels.

    Returns ``(H * s, W * s, 3)`` uint8 with the integer scale ``s`` that makes the shorter side >= ``display``.
    """
    H, W = rgb.shape[:2]
    s = _scale((H, W), display)
    img = np.clip(np.asarray(rgb, dtype=np.float32), 0, 1)
    if attn is not None:
        import matplotlib

        a = F.interpolate(attn.detach().float().cpu()[None, None], size=(H, W), mode="nearest")[0, 0].numpy()
        a = a / max(float(a.max()), 1e-12)
        heat = matplotlib.colormaps[ATTENTION_CMAP](a)[..., :3]
        img = (1 - alpha) * img + alpha * heat
    big = np.kron((img * 255).round().astype(np.uint8), np.ones((s, s, 1), dtype=np.uint8))
    canvas = Image.fromarray(big)
    draw = ImageDraw.Draw(canvas)
    for y0, x0, y1, x1 in marks:
        draw.rectangle([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], outline=(255, 0, 0), width=2)
    for (x0, y0, x1, y1), colour, text in boxes:
        draw.rectangle([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], outline=colour, width=3)
        if text:
            draw.text((x0 * s + 3, y0 * s + 2), text, fill=colour)
    return np.asarray(canvas)


def display_to_input(click_xy: Sequence[int], display_hw: Tuple[int, int], input_hw: Tuple[int, int]) -> Cell:
    """A click ``(x, y)`` on a drawn image of ``display_hw`` -> the ``(y, x)`` pixel of the ``input_hw`` image."""
    (x, y), (dh, dw), (H, W) = click_xy, display_hw, input_hw
    return min(H - 1, max(0, int(y) * H // dh)), min(W - 1, max(0, int(x) * W // dw))


def cell_box(
    cell: Cell, grid: Tuple[int, int], hw: Tuple[int, int], radius: int = 0
) -> Tuple[float, float, float, float]:
    """Grid cells ``cell +- radius`` of a ``grid`` laid over an ``hw`` image -> ``(y0, x0, y1, x1)`` input pixels."""
    (gy, gx), (gh, gw), (H, W) = cell, grid, hw
    return (
        max(gy - radius, 0) * H / gh,
        max(gx - radius, 0) * W / gw,
        min(gy + radius + 1, gh) * H / gh,
        min(gx + radius + 1, gw) * W / gw,
    )


def _to_input(m: ExplorerModel, image: Union[Image.Image, np.ndarray]) -> Tuple[Tensor, np.ndarray]:
    """A picture -> ``(model input (3, H, W), its display rgb (H, W, 3) in [0, 1])``."""
    pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    x = m.transform(pil.convert("RGB"))
    mean, std = m.stats
    return x, to_display_rgb(x, mean, std).numpy() if mean is not None else to_display_rgb(x).numpy()


def _check_head(head: Union[int, str], heads: int) -> None:
    if head != "mean" and not (isinstance(head, int) and 0 <= head < heads):
        raise ValueError(f"head must be 'mean' or an int in [0, {heads}); got {head!r}")


# ---- Classify (ViT) --------------------------------------------------------------------------------------------
@dataclass
class ClassifyView:
    """One image through a ViT: ``x (3, H, W)`` its input, ``rgb (H, W, 3)``, ``top`` the top-k ``(name, prob)``,
    ``layers`` each block's captured ``(heads, N, N)``, ``grid`` the patch grid, ``prefix`` the class tokens."""

    x: Tensor
    rgb: np.ndarray
    top: List[Tuple[str, float]]
    layers: List[Tensor]
    grid: Tuple[int, int]
    prefix: int
    rollout: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.rollout = attention_rollout([w[None] for w in self.layers])[0]  # (N, N), rows sum to 1


def _top_k(logits: Tensor, labels: Optional[Sequence[str]], k: int) -> List[Tuple[str, float]]:
    probs = logits.float().softmax(-1)
    p, idx = probs.topk(min(k, probs.numel()))

    def name(i):
        return str(labels[i]) if labels is not None and i < len(labels) else str(i)

    return [(name(int(i)), float(v)) for v, i in zip(p, idx)]


@torch.no_grad()
def classify(m: ExplorerModel, image: Union[Image.Image, np.ndarray], top_k: int = 5) -> ClassifyView:
    """Run the ViT of ``m`` on ``image`` once and keep every block's attention (what ``capture_attention`` records)."""
    x, rgb = _to_input(m, image)
    with _FORWARD, capture_attention(m.model) as maps:
        logits = m.model(x[None])[0]
    layers = [w[0].float() for w in vit_block_maps(maps)]
    grid = tuple(m.model.patch_embed.feature_grid(*x.shape[-2:]))
    return ClassifyView(x, rgb, _top_k(logits, m.labels, top_k), layers, grid, int(m.model.num_prefix_tokens))


def patch_attention(
    view: ClassifyView, pixel: Cell, layer: Union[int, str] = "rollout", head: Union[int, str] = "mean"
) -> Tuple[Tensor, Cell]:
    """Where the patch under input ``pixel (y, x)`` attends: ``((gh, gw) map over the patches, its grid cell)``.

    ``layer``: a block index (its ``head`` or the mean over heads) or ``"rollout"`` (attention rollout to that
    patch's output token, heads averaged by definition)."""
    H, W = view.x.shape[-2:]
    (cell,) = to_query_grid([pixel], (H, W), view.grid)
    q = view.prefix + cell[0] * view.grid[1] + cell[1]
    if layer == "rollout":
        row = view.rollout[q]
    else:
        if not (isinstance(layer, int) and -len(view.layers) <= layer < len(view.layers)):
            raise ValueError(f"layer must be 'rollout' or a block index in [0, {len(view.layers)}); got {layer!r}")
        w = view.layers[layer]
        _check_head(head, w.shape[0])
        row = (w.mean(0) if head == "mean" else w[head])[q]
    return row[view.prefix :].reshape(view.grid), cell


# ---- Detect (DETR) ---------------------------------------------------------------------------------------------
@dataclass
class DetectView:
    """One image through a DETR: ``boxes (K, 4)`` xyxy in input pixels of the ``K`` kept detections (best first),
    ``queries`` their query indices, ``cross (heads, Q, h*w)`` the last decoder layer's cross-attention."""

    x: Tensor
    rgb: np.ndarray
    boxes: Tensor
    names: List[str]
    labels: List[int]
    scores: List[float]
    queries: List[int]
    cross: Tensor
    feature_hw: Tuple[int, int]


@torch.no_grad()
def detect(m: ExplorerModel, image: Union[Image.Image, np.ndarray], threshold: float = 0.5) -> DetectView:
    """Run the DETR of ``m`` on ``image`` once: detections scoring >= ``threshold`` and the decoder cross-attention."""
    x, rgb = _to_input(m, image)
    H, W = x.shape[-2:]
    with _FORWARD, capture_attention(m.model) as maps:
        out = m.model(x[None])
    (det,) = detr_postprocess(out, torch.tensor([[H, W]]))
    order = det["scores"].argsort(descending=True).tolist()
    keep = [q for q in order if det["scores"][q] >= threshold and int(det["labels"][q]) in m.labels]
    labels = [int(det["labels"][q]) for q in keep]
    return DetectView(
        x,
        rgb,
        det["boxes"][keep].float(),
        [m.labels[lab][1] for lab in labels],
        labels,
        [float(det["scores"][q]) for q in keep],
        keep,
        last_cross_attention(maps)[0].float(),
        tuple(m.model.feature_size(H, W)),
    )


def box_at(view: DetectView, pixel: Cell) -> Optional[int]:
    """The detection (index into ``view.boxes``) under input ``pixel (y, x)``: the smallest box holding it, else the
    box whose centre is nearest; None without detections."""
    if not len(view.boxes):
        return None
    y, x = pixel[0] + 0.5, pixel[1] + 0.5
    b = view.boxes
    inside = (b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])
    if inside.any():
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        return int(torch.where(inside, area, torch.full_like(area, float("inf"))).argmin())
    centre = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], -1)
    return int((centre - torch.tensor([x, y])).square().sum(-1).argmin())


def query_attention(view: DetectView, index: int, head: Union[int, str] = "mean") -> Tensor:
    """Detection ``index``'s decoder cross-attention over the feature grid, ``(h, w)`` (``head`` or their mean)."""
    if not 0 <= index < len(view.queries):
        raise ValueError(f"detection index {index} is outside the {len(view.queries)} detections")
    _check_head(head, view.cross.shape[0])
    w = view.cross.mean(0) if head == "mean" else view.cross[head]
    return w[view.queries[index]].reshape(view.feature_hw)


def render_detections(view: DetectView, selected: Optional[int] = None, head: Union[int, str] = "mean") -> np.ndarray:
    """The image with its boxes; with ``selected``, that detection's cross-attention under them (others dimmed)."""
    attn = None if selected is None else query_attention(view, selected, head)
    boxes = [
        (b.tolist(), BOX_COLORS_RGB[lab % len(BOX_COLORS_RGB)], f"{name} {score:.2f}")
        for i, (b, lab, name, score) in enumerate(zip(view.boxes, view.labels, view.names, view.scores))
        if selected is None or i == selected
    ]
    return overlay(view.rgb, attn, boxes=boxes)


def _rgb255(name: str) -> Tuple[int, int, int]:
    from matplotlib.colors import to_rgb

    return tuple(int(round(255 * c)) for c in to_rgb(name))


BOX_COLORS_RGB = [_rgb255(c) for c in BOX_COLORS]


# ---- Pixel attention (non-local, SASA) -------------------------------------------------------------------------
@dataclass
class PixelView:
    """One image through a pixel-attention net: ``weights`` by module (``(heads, N, Nk)`` or local ``(heads, N,
    k*k)``), ``grids`` their query grids, ``kernels`` their window (None: global), ``top`` the top-k."""

    x: Tensor
    rgb: np.ndarray
    top: List[Tuple[str, float]]
    weights: Dict[str, Tensor]
    grids: Dict[str, Tuple[int, int]]
    kernels: Dict[str, Optional[int]]


@torch.no_grad()
def pixel_forward(m: ExplorerModel, image: Union[Image.Image, np.ndarray], top_k: int = 5) -> PixelView:
    """Run the net of ``m`` on ``image`` once and keep each non-local / SASA block's attention."""
    x, rgb = _to_input(m, image)
    with _FORWARD, capture_attention(m.model) as maps:
        logits = m.model(x[None])[0]
    weights, grids, kernels = {}, {}, {}
    for name, w in maps.items():
        module = m.model.get_submodule(name) if name != "self" else m.model
        if isinstance(module, (LocalSelfAttention2d, NonLocalBlock2d)):
            weights[name] = w[0].float()
            grids[name] = query_grid_size(w.shape[2], tuple(x.shape[-2:]))
            kernels[name] = module.kernel_size if isinstance(module, LocalSelfAttention2d) else None
    return PixelView(x, rgb, _top_k(logits, m.labels, top_k), weights, grids, kernels)


def pixel_attention(
    view: PixelView, module: str, pixel: Cell, head: Union[int, str] = "mean"
) -> Tuple[Tensor, Tuple[float, float, float, float], Optional[Tuple[float, float, float, float]]]:
    """Where block ``module``'s query under input ``pixel (y, x)`` attends: ``((h, w) map on the key grid, the query
    cell's rectangle, the local window's rectangle or None)``; rectangles ``(y0, x0, y1, x1)`` in input pixels."""
    if module not in view.weights:
        raise ValueError(f"no pixel attention module {module!r}; the net has {sorted(view.weights)}")
    w, grid, k = view.weights[module], view.grids[module], view.kernels[module]
    _check_head(head, w.shape[0])
    hw = tuple(view.x.shape[-2:])
    (cell,) = to_query_grid([pixel], hw, grid)
    maps = pixel_attention_maps(w, grid, [cell], kernel_size=k)[0]  # (heads, h, w)
    attn = maps.mean(0) if head == "mean" else maps[head]
    window = None if k is None else cell_box(cell, grid, hw, k // 2)
    return attn, cell_box(cell, grid, hw), window


# ---- Generate (SA-GAN) -----------------------------------------------------------------------------------------
@dataclass
class GenerateView:
    """One sample: ``rgb (S, S, 3)``, ``weights (heads, R*R, Nk)`` the generator's attention at ``R x R``."""

    rgb: np.ndarray
    weights: Tensor
    res: int
    label: Optional[int]


@torch.no_grad()
def generate(m: ExplorerModel, label: Optional[int] = 0, seed: int = 0) -> GenerateView:
    """One sample of class ``label`` (None: unconditional) from noise seeded by ``seed``, with the sampling
    generator's self-attention."""
    gan: SAGAN = m.model
    gen = gan.sampler
    if gen.attention is None:
        raise ValueError(f"{m.name}: the generator has no self-attention (g_attn_res=None): nothing to draw")
    if gan.num_classes and not (label is not None and 0 <= int(label) < gan.num_classes):
        raise ValueError(f"class must be an int in [0, {gan.num_classes}); got {label!r}")
    label = int(label) if gan.num_classes else None
    with _FORWARD, capture_attention(gen) as maps:
        image = gan.sample(1, labels=label, generator=torch.Generator().manual_seed(int(seed)))[0]
    return GenerateView(to_display_rgb(image).numpy(), maps["attention"][0].float(), gen.attn_res, label)


def generator_attention(
    view: GenerateView, pixel: Cell, head: Union[int, str] = "mean"
) -> Tuple[Tensor, Tuple[float, float, float, float]]:
    """Where the generator's attention query under image ``pixel (y, x)`` attends: ``((h, w) map on its key grid, the
    query cell's rectangle in image pixels)``."""
    _check_head(head, view.weights.shape[0])
    hw, grid = view.rgb.shape[:2], (view.res, view.res)
    (cell,) = to_query_grid([pixel], hw, grid)
    maps = pixel_attention_maps(view.weights, grid, [cell])[0]
    return (maps.mean(0) if head == "mean" else maps[head]), cell_box(cell, grid, hw)


# ---- CNN vs attention ------------------------------------------------------------------------------------------
def seeded_conv_attention(seed: int = 0, in_channels: int = 3, out_channels: int = 8) -> ConvAttention2d:
    """A seeded random 3x3 ``Conv2d`` converted by :func:`attention_from_conv`: nine one-hot positional heads."""
    torch.manual_seed(seed)
    return attention_from_conv(nn.Conv2d(in_channels, out_channels, 3, padding=1)).eval()


@torch.no_grad()
def conv_weights(layer: ConvAttention2d, x: Tensor) -> Tensor:
    """The captured attention of ``layer`` on ``x (C, H, W)``: ``(k*k, H*W, (H+2r)*(W+2r))`` over the zero-padded
    map. Its heads are positional (it depends on the size of ``x`` only): about a second at 32 px on a CPU, so
    compute it once per size and let each click slice it."""
    with _FORWARD, capture_attention(layer) as maps:
        layer(x[None].float())
    return maps["self"][0].float()


def conv_heads(weights: Tensor, hw: Tuple[int, int], kernel_size: int, pixel: Cell) -> Tensor:
    """Each head's attention (``weights`` from :func:`conv_weights`) from ``pixel (y, x)`` of the ``hw`` image,
    cropped to the image: ``(k*k, H, W)`` (weight on the zero padding is left out)."""
    (H, W), (y, x), r = hw, pixel, kernel_size // 2
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f"query pixel (y, x) = {tuple(pixel)} is outside the {H}x{W} map")
    maps = weights[:, y * W + x].reshape(-1, H + 2 * r, W + 2 * r)
    return maps[:, r : H + r, r : W + r]


def conv_input(image: Union[Tensor, np.ndarray], side: int = CONV_SIDE) -> Tensor:
    """A model input ``(C, H, W)`` or a picture ``(H, W, 3)`` uint8 -> ``(C, h, w)`` float with ``max(h, w) <= side``
    (area-resized; the captured conv attention is quadratic in the pixels)."""
    x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255 if isinstance(image, np.ndarray) else image
    H, W = x.shape[-2:]
    if max(H, W) <= side:
        return x.float()
    h, w = max(1, round(H * side / max(H, W))), max(1, round(W * side / max(H, W)))
    return F.interpolate(x.float()[None], size=(h, w), mode="area")[0]


def vit_heads(view: ClassifyView, pixel: Cell, layer: int = -1) -> Tensor:
    """Each head of ViT block ``layer``: where the patch under ``pixel`` attends, ``(heads, gh, gw)``."""
    w = view.layers[layer]
    return torch.stack([patch_attention(view, pixel, layer, h)[0] for h in range(w.shape[0])])


def conv_panel(
    layer: ConvAttention2d, weights: Tensor, small: Tensor, input_hw: Tuple[int, int], pixel: Cell
) -> np.ndarray:
    """The nine heads of ``layer`` (``weights`` from :func:`conv_weights` on ``small (C, h, w)``, the
    :func:`conv_input` of an ``input_hw`` image) for the input ``pixel``, as a 3x3 mosaic of the 9x9 pixels around
    it (large: each head's one attended pixel is plain to see); the query framed in red. uint8."""
    (cell,) = to_query_grid([pixel], input_hw, tuple(small.shape[-2:]))
    heads = conv_heads(weights, tuple(small.shape[-2:]), layer.kernel_size, cell)
    (y0, y1), (x0, x1) = ((max(0, c - 4), min(n, c + 5)) for c, n in zip(cell, small.shape[-2:]))
    crop = to_display_rgb(small).numpy()[y0:y1, x0:x1]
    mark = (cell[0] - y0, cell[1] - x0, cell[0] - y0 + 1, cell[1] - x0 + 1)
    return head_mosaic(crop, heads[:, y0:y1, x0:x1], [mark], cols=layer.kernel_size, display=108)


def vit_panel(view: ClassifyView, pixel: Cell, layer: int = -1) -> np.ndarray:
    """Each head of ViT block ``layer`` for the patch under ``pixel`` (:func:`vit_heads`), tiled 4 wide. uint8."""
    maps = vit_heads(view, pixel, layer)
    (patch,) = to_query_grid([pixel], tuple(view.x.shape[-2:]), view.grid)
    return head_mosaic(view.rgb, maps, [cell_box(patch, view.grid, tuple(view.x.shape[-2:]))], min(len(maps), 4))


def head_mosaic(
    rgb: np.ndarray,
    maps: Tensor,
    marks: Sequence[Tuple[float, float, float, float]] = (),
    cols: int = 3,
    display: int = 96,
) -> np.ndarray:
    """``maps (n, h, w)`` each drawn over ``rgb`` (:func:`overlay`), tiled ``cols`` wide with a 4 px gap: uint8."""
    tiles = [overlay(rgb, a, marks, display=display) for a in maps]
    th, tw = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    out = np.full((rows * (th + 4) - 4, cols * (tw + 4) - 4, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (th + 4) : r * (th + 4) + th, c * (tw + 4) : c * (tw + 4) + tw] = t
    return out
