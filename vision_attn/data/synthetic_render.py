"""Rendering of the built-in synthetic images (numpy only, byte-identical for the same seed): the shapes task's
ten silhouettes on a cluttered background, and the helpers :mod:`.synthetic_relational` and :mod:`.synthetic_coco`
draw with. :mod:`.synthetic` writes them in CIFAR-10's format and reads them back.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RELATIONAL_CLASSES", "SHAPE_CLASSES", "render_shapes", "task_classes"]

SHAPE_CLASSES = (
    "circle",
    "ring",
    "square",
    "square_frame",
    "diamond",
    "triangle",
    "plus",
    "x_cross",
    "horizontal_bar",
    "vertical_bar",
)
# task="relational" (vision_attn.data.synthetic_relational): (same silhouette?) x (is the upper shape the larger?)
RELATIONAL_CLASSES = ("same_upper_larger", "same_upper_smaller", "different_upper_larger", "different_upper_smaller")
_CHUNK = 512  # images rendered at once; fixed, because the random stream is drawn chunk by chunk
_INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))


def task_classes(task: str = "shapes") -> tuple[str, ...]:
    """The class names of ``task`` (index = label)."""
    return RELATIONAL_CLASSES if task == "relational" else SHAPE_CLASSES


# ---- rendering ---------------------------------------------------------------------------------------------------
def _shape_distance(name: str, u: np.ndarray, v: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) to a unit-size silhouette at ``(u, v)`` (v points down); ``k`` scales strokes."""
    au, av = np.abs(u), np.abs(v)
    if name == "circle":
        return np.sqrt(u * u + v * v) - 0.95
    if name == "ring":
        return np.abs(np.sqrt(u * u + v * v) - 0.78) - 0.21 * k
    if name == "square":
        return np.maximum(au, av) - 0.78
    if name == "square_frame":
        return np.abs(np.maximum(au, av) - 0.72) - 0.19 * k
    if name == "diamond":
        return (au + av - 1.12) * _INV_SQRT2
    if name == "triangle":  # equilateral, apex up, centroid at the origin, circumradius 1.12
        return np.maximum(v, np.float32(0.8660254) * au - np.float32(0.5) * v) - 0.56
    if name in ("plus", "x_cross"):
        if name == "x_cross":
            au, av = np.abs(u + v) * _INV_SQRT2, np.abs(u - v) * _INV_SQRT2
        t = 0.27 * k
        return np.minimum(np.maximum(au - 1.0, av - t), np.maximum(au - t, av - 1.0))
    if name == "horizontal_bar":
        return np.maximum(au - 1.15, av - 0.27 * k)
    if name == "vertical_bar":
        return np.maximum(au - 0.27 * k, av - 1.15)
    raise KeyError(name)


def _col(a: np.ndarray) -> np.ndarray:
    """``(n, ...)`` per-image values -> broadcastable against ``(n, S, S)``."""
    return a.reshape(-1, 1, 1)


def _blend(img: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Paint ``color (n, 3)`` over ``img (n, 3, S, S)`` with coverage ``alpha (n, S, S)``."""
    diff = color[:, :, None, None] - img
    diff *= alpha[:, None]
    img += diff  # in place: the image is the largest array here
    return img


def _segment_alpha(xs, ys, a: np.ndarray, b: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage ``(n, S, S)`` of segments ``a -> b`` (``(n, 2)`` pixel coordinates)."""
    dx, dy = _col(b[:, 0] - a[:, 0]), _col(b[:, 1] - a[:, 1])
    px, py = xs - _col(a[:, 0]), ys - _col(a[:, 1])
    t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-6), 0.0, 1.0)
    ex, ey = px - t * dx, py - t * dy
    return np.clip(_col(half_width) + 0.5 - np.sqrt(ex * ex + ey * ey), 0.0, 1.0)


def _light_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random light colours ``(n, 3)``, every channel in [0.55, 1]."""
    return 0.55 + 0.45 * rng.random((n, 3), dtype=np.float32)


def _contrasting_colors(rng: np.random.Generator, background: np.ndarray, min_l1: float = 0.75) -> np.ndarray:
    """Light colours ``(n, 3)`` at least ``min_l1`` (sum of channel differences) away from ``background``."""
    color = _light_colors(rng, len(background))
    bad = np.abs(color - background).sum(1) < min_l1
    while bad.any():
        color[bad] = _light_colors(rng, int(bad.sum()))
        bad = np.abs(color - background).sum(1) < min_l1
    return color


def _uniform(rng: np.random.Generator, lo, hi, shape) -> np.ndarray:
    """float32 samples in ``[lo, hi)`` of ``shape`` (``lo``/``hi`` may be per-image arrays)."""
    return (lo + (hi - lo) * rng.random(shape, dtype=np.float32)).astype(np.float32)


def _cluttered_background(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy gradient with two lines and two soft blobs in random colours: ``(img (n, 3, S, S), base (n, 3))``."""
    f32, px = np.float32, size / 32.0
    grid = np.arange(size, dtype=f32) + 0.5  # pixel centres
    xs, ys = grid[None, None, :], grid[None, :, None]
    # a dark base colour (channels in [0, 0.45]), a linear gradient and per-pixel texture noise
    base = 0.45 * rng.random((n, 3), dtype=f32)
    slope = _uniform(rng, -0.3, 0.3, (n, 2)) / size
    ramp = _col(slope[:, 0]) * (xs - size / 2) + _col(slope[:, 1]) * (ys - size / 2)
    img = rng.random((n, 3, size, size), dtype=f32)
    img -= 0.5
    img *= 0.18
    img += base[:, :, None, None]
    img += ramp[:, None]
    for _ in range(2):
        a, b = _uniform(rng, -0.2 * size, 1.2 * size, (n, 2)), _uniform(rng, -0.2 * size, 1.2 * size, (n, 2))
        alpha = _segment_alpha(xs, ys, a, b, _uniform(rng, 0.3, 0.8, (n,)) * px) * _col(_uniform(rng, 0.35, 1.0, (n,)))
        img = _blend(img, alpha, rng.random((n, 3), dtype=f32))
    for _ in range(2):
        c, r = _uniform(rng, 0, size, (n, 2)), _uniform(rng, 1.5, 3.5, (n,)) * px
        d2 = ((xs - _col(c[:, 0])) ** 2 + (ys - _col(c[:, 1])) ** 2) / _col(r * r)
        alpha = np.clip(1.0 - d2, 0.0, 1.0) ** 2 * _col(_uniform(rng, 0.4, 0.9, (n,)))
        img = _blend(img, alpha, rng.random((n, 3), dtype=f32))
    return img, base


def _occlude_and_quantize(rng: np.random.Generator, img: np.ndarray, probability: float) -> np.ndarray:
    """With ``probability`` a line across the image (partial occlusion), then sensor noise; ``img`` -> uint8."""
    n, size, px = len(img), img.shape[-1], img.shape[-1] / 32.0
    grid = np.arange(size, dtype=np.float32) + 0.5
    xs, ys = grid[None, None, :], grid[None, :, None]
    a, b = _uniform(rng, -0.2 * size, 1.2 * size, (n, 2)), _uniform(rng, -0.2 * size, 1.2 * size, (n, 2))
    width = _uniform(rng, 0.3, 0.6, (n,)) * px
    alpha = _segment_alpha(xs, ys, a, b, width) * _col((rng.random(n) < probability) * _uniform(rng, 0.4, 0.9, (n,)))
    img = _blend(img, alpha, rng.random((n, 3), dtype=np.float32))
    noise = rng.random(img.shape, dtype=np.float32)  # sensor noise
    noise -= 0.5
    noise *= 0.12
    img += noise
    np.clip(img, 0.0, 1.0, out=img)
    img *= 255.0
    img += 0.5
    return img.astype(np.uint8)


def _render(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Images ``(n, 3, size, size)`` uint8 (channel-planar, like CIFAR's rows) of the shapes ``labels (n,)``."""
    n, f32 = len(labels), np.float32
    grid = np.arange(size, dtype=f32) + 0.5  # pixel centres
    xs, ys = grid[None, None, :], grid[None, :, None]

    def uniform(lo, hi, shape=(n,)):
        return _uniform(rng, lo, hi, shape)

    img, base = _cluttered_background(rng, n, size)
    # the shape: size s (px, ~half-extent), centre, rotation within +-15 degrees, stroke thickness factor k
    s = uniform(0.20, 0.32) * size
    cx, cy = uniform(0, 1) * (size - 2 * s) + s, uniform(0, 1) * (size - 2 * s) + s
    tan_half = uniform(-0.1317, 0.1317)  # tan(7.5 deg): rotation from the rational parametrisation (no trig)
    cos, sin = (1 - tan_half**2) / (1 + tan_half**2), 2 * tan_half / (1 + tan_half**2)
    k = uniform(0.8, 1.25)
    dx, dy = xs - _col(cx), ys - _col(cy)
    u = (dx * _col(cos) + dy * _col(sin)) / _col(s)
    v = (dy * _col(cos) - dx * _col(sin)) / _col(s)
    dist = np.empty((n, size, size), dtype=f32)
    for c, name in enumerate(SHAPE_CLASSES):
        sel = labels == c
        if sel.any():
            dist[sel] = _shape_distance(name, u[sel], v[sel], _col(k[sel])) * _col(s[sel])
    shape_color = _contrasting_colors(rng, base)
    img = _blend(img, np.clip(0.5 - dist, 0.0, 1.0), shape_color)
    return _occlude_and_quantize(rng, img, 0.25)  # sometimes a line crosses the shape


def render_shapes(num: int, img_size: int = 32, seed: int = 0, task: str = "shapes") -> tuple[np.ndarray, np.ndarray]:
    """``num`` images ``(num, 3, img_size, img_size)`` uint8 and balanced labels ``(num,)`` int64 of ``task``.

    ``seed``: an int or a ``numpy.random.SeedSequence``.
    """
    render = _render
    if task == "relational":
        from .synthetic_relational import render_relational as render  # it imports this module's helpers
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % len(task_classes(task)))
    images = np.empty((num, 3, img_size, img_size), dtype=np.uint8)
    for start in range(0, num, _CHUNK):
        images[start : start + _CHUNK] = render(rng, labels[start : start + _CHUNK], img_size)
    return images, labels
