"""The relational shapes task: two shapes per cluttered image; the label is how they relate, not what they are.

Four classes, ``(same shape?) x (is the upper shape the larger one?)``:
``same_upper_larger``, ``same_upper_smaller``, ``different_upper_larger``, ``different_upper_smaller``.

Each image holds two shapes from :data:`RELATIONAL_SHAPES`, one above the other (vertically disjoint, horizontally
anywhere), with independent light colours, rotations (within +-15 degrees) and stroke widths; one is 1.35-1.65x the
other's size. Neither shape alone says the class: "same" asks whether two shapes of different sizes and colours have
one silhouette, "upper larger" compares the sizes of two objects at two places. The background is the shapes task's
clutter (gradient, texture, two lines, two blobs), and half of the images get a line drawn across the scene
(occlusion). Horizontal flips and small shifts keep the label (the augmentation CIFARDataModule applies). Chance is
25%. Rendered with numpy only from ``numpy.random.default_rng``, like :mod:`.synthetic` (same arguments, same bytes).
"""

from __future__ import annotations

import numpy as np

from .synthetic_render import (
    RELATIONAL_CLASSES,
    _blend,
    _cluttered_background,
    _col,
    _contrasting_colors,
    _occlude_and_quantize,
    _shape_distance,
    _uniform,
)

__all__ = ["RELATIONAL_CLASSES", "RELATIONAL_SHAPES", "render_relational"]

RELATIONAL_SHAPES = ("circle", "ring", "square", "triangle", "plus")
_EXTENT = 1.15  # a rotated silhouette reaches at most this many half-sizes from its centre (square corners, triangle)
_GAP = 1.0  # px (at 32 px) between the upper shape's lowest point and the lower shape's highest


def render_relational(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Images ``(n, 3, size, size)`` uint8 (channel-planar, like CIFAR's rows) for relational ``labels (n,)``."""
    n, px = len(labels), size / 32.0
    img, base = _cluttered_background(rng, n, size)
    same = labels < 2
    upper_larger = labels % 2 == 0
    n_shapes = len(RELATIONAL_SHAPES)
    shape_upper = rng.integers(0, n_shapes, n)
    shape_lower = np.where(same, shape_upper, (shape_upper + rng.integers(1, n_shapes, n)) % n_shapes)
    small = _uniform(rng, 3.5, 4.8, (n,)) * px  # half-size in px; at most 2.3 * (4.8 + 7.9) + 1 < 32 px in all
    large = small * _uniform(rng, 1.35, 1.65, (n,))
    s_up, s_low = np.where(upper_larger, large, small), np.where(upper_larger, small, large)
    # vertical layout: a random top margin and a random extra gap share the slack left by the two extents
    slack = np.maximum(0.0, size - 2 * _EXTENT * (s_up + s_low) - _GAP * px)
    top = _uniform(rng, 0.0, 1.0, (n,)) * slack
    gap = _uniform(rng, 0.0, 1.0, (n,)) * (slack - top)
    y_up = top + _EXTENT * s_up
    y_low = y_up + _EXTENT * (s_up + s_low) + _GAP * px + gap
    for shape, s, cy in ((shape_upper, s_up, y_up), (shape_lower, s_low, y_low)):
        cx = _EXTENT * s + _uniform(rng, 0.0, 1.0, (n,)) * (size - 2 * _EXTENT * s)
        img = _draw(img, rng, shape, s, cx, cy, base)
    return _occlude_and_quantize(rng, img, 0.5)


def _draw(
    img: np.ndarray,
    rng: np.random.Generator,
    shape: np.ndarray,
    s: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    base: np.ndarray,
) -> np.ndarray:
    """Paint silhouette ``RELATIONAL_SHAPES[shape]`` (per image) of half-size ``s`` centred at ``(cx, cy)`` px."""
    n, size = len(img), img.shape[-1]
    grid = np.arange(size, dtype=np.float32) + 0.5
    xs, ys = grid[None, None, :], grid[None, :, None]
    tan_half = _uniform(rng, -0.1317, 0.1317, (n,))  # rotation within +-15 degrees, no trig (rational parametrisation)
    cos, sin = (1 - tan_half**2) / (1 + tan_half**2), 2 * tan_half / (1 + tan_half**2)
    k = _uniform(rng, 0.8, 1.25, (n,))
    dx, dy = xs - _col(cx), ys - _col(cy)
    u = (dx * _col(cos) + dy * _col(sin)) / _col(s)
    v = (dy * _col(cos) - dx * _col(sin)) / _col(s)
    dist = np.empty((n, size, size), dtype=np.float32)
    for c, name in enumerate(RELATIONAL_SHAPES):
        sel = shape == c
        if sel.any():
            dist[sel] = _shape_distance(name, u[sel], v[sel], _col(k[sel])) * _col(s[sel])
    return _blend(img, np.clip(0.5 - dist, 0.0, 1.0), _contrasting_colors(rng, base))
