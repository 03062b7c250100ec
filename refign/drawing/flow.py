"""Pictures of one alignment, to see whether a warp is right (``python -m refign.align``): the check the
Refign author recommends (Refign issue 18), the reference warped onto the target and faded by the matcher's
certainty (docs/tools.md#align).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

EPE_MAX = 10.0  # px: the end-point error shown at full red (PCK-10's threshold)


def gray(x: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] → (H, W, 3) uint8 grey levels (1 = white)."""
    return (np.clip(x, 0, 1)[..., None].repeat(3, -1) * 255).round().astype(np.uint8)


def certainty_overlay(
    target: np.ndarray, warped: np.ndarray, certainty: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """The warped reference half over the target, fading to white as the certainty falls to 0 (and white
    where the flow points outside the reference)."""
    blend = 0.5 * target.astype(np.float32) + 0.5 * warped.astype(np.float32)
    c = (np.clip(certainty, 0, 1) * valid)[..., None]
    return (c * blend + (1 - c) * 255.0).round().astype(np.uint8)


def flow_to_rgb(flow: np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """(2, H, W) pixel flow → colour wheel: hue = direction (right = red, down = yellow-green, left = cyan,
    up = violet), saturation = length relative to ``max_norm`` (default: the longest vector), white = 0."""
    u, v = flow[0], flow[1]
    norm = np.hypot(u, v)
    max_norm = max_norm or float(norm.max()) or 1.0
    hue = ((np.arctan2(v, u) / (2 * np.pi)) % 1.0 * 255).astype(np.uint8)
    sat = (np.clip(norm / max_norm, 0, 1) * 255).astype(np.uint8)
    hsv = np.stack([hue, sat, np.full_like(hue, 255)], -1)
    return np.array(Image.fromarray(hsv, "HSV").convert("RGB"))


def colour_wheel(size: int = 64) -> np.ndarray:
    """The key of :func:`flow_to_rgb`: the colour of every direction and length up to the wheel's radius."""
    r = (size - 1) / 2
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) - r
    wheel = flow_to_rgb(np.stack([xs, ys]), r)
    wheel[np.hypot(xs, ys) > r] = 255
    return wheel


def epe_to_rgb(epe: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """End-point error: green (0 px) → yellow → red (≥ ``EPE_MAX`` px); black where there is no ground truth."""
    t = np.clip(epe / EPE_MAX, 0, 1)
    rgb = np.stack([np.clip(2 * t, 0, 1), np.clip(2 - 2 * t, 0, 1), np.zeros_like(t)], -1)
    return (rgb * 255 * valid[..., None]).round().astype(np.uint8)


def panel(tiles: list[np.ndarray], gap: int = 4, axis: int = 1) -> np.ndarray:
    """Tiles side by side (``axis=1``, of one height) or one above the other (``axis=0``, of one width),
    separated by white."""
    shape = list(tiles[0].shape)
    shape[axis] = gap
    sep = np.full(shape, 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, sep)][:-1], axis=axis)
