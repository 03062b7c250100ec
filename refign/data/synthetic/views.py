"""Camera views cut from a scene canvas by homographies, and the ground-truth flow between two views.

A view is described by ``M``, the 3×3 homography mapping view pixel coordinates to canvas coordinates (integer
pixel centres, the convention of ``cv2.warpPerspective`` and of the official ``warp``).
"""

from __future__ import annotations

import cv2
import numpy as np


def view_homography(
    rng: np.random.Generator,
    canvas: tuple[int, int],
    view: tuple[int, int],
    zoom: float,
    shift: tuple[float, float],
    jitter: float,
) -> np.ndarray:
    """Homography view→canvas for a quad of ``zoom``·canvas size, centred at canvas centre + ``shift``.

    ``jitter`` (fraction of the view size) perturbs each corner independently: a small perspective change.
    The quad is shrunk towards its centre until it lies inside the canvas, so a view never sees past it.
    """
    (ch, cw), (vh, vw) = canvas, view
    qh, qw = zoom * ch, zoom * cw
    cx, cy = cw / 2 + shift[0] * cw, ch / 2 + shift[1] * ch
    offsets = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * [qw / 2, qh / 2]
    offsets += rng.uniform(-jitter, jitter, (4, 2)).astype(np.float32) * [qw, qh]
    for _ in range(20):
        quad = offsets + [cx, cy]
        if (
            quad[:, 0].min() >= 0
            and quad[:, 0].max() <= cw - 1
            and quad[:, 1].min() >= 0
            and quad[:, 1].max() <= ch - 1
        ):
            break
        offsets *= 0.95
        cx, cy = 0.9 * cx + 0.1 * cw / 2, 0.9 * cy + 0.1 * ch / 2
    corners = np.array([[0, 0], [vw - 1, 0], [vw - 1, vh - 1], [0, vh - 1]], np.float32)
    return cv2.getPerspectiveTransform(corners, quad.astype(np.float32))


def cut(
    canvas_img: np.ndarray, M: np.ndarray, view: tuple[int, int], nearest: bool = False, border: float = 0
) -> np.ndarray:
    """Sample the canvas at ``M``·(view pixel)."""
    flags = (cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR) | cv2.WARP_INVERSE_MAP
    return cv2.warpPerspective(
        canvas_img, M, (view[1], view[0]), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )


def apply_h(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a homography to (..., 2) points."""
    pts = np.concatenate([xy, np.ones((*xy.shape[:-1], 1), xy.dtype)], -1) @ H.T
    return pts[..., :2] / pts[..., 2:3]


def flow_between(M_trg: np.ndarray, M_ref: np.ndarray, view: tuple[int, int]) -> np.ndarray:
    """Flow (2, H, W) on the target grid pointing into the reference: p_ref = M_ref⁻¹ · M_trg · p_trg."""
    h, w = view
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float64)
    ref = apply_h(np.linalg.inv(M_ref) @ M_trg, grid)
    return (ref - grid).transpose(2, 0, 1).astype(np.float32)


def flow_validity(flow: np.ndarray, dynamic_trg: np.ndarray, dynamic_ref: np.ndarray) -> np.ndarray:
    """Pixels whose flow lands strictly inside the reference and on static structure in both views."""
    h, w = dynamic_trg.shape
    x = np.arange(w)[None] + flow[0]
    y = np.arange(h)[:, None] + flow[1]
    inside = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    xi = np.clip(np.round(x).astype(int), 0, w - 1)
    yi = np.clip(np.round(y).astype(int), 0, h - 1)
    return inside & ~dynamic_trg & ~dynamic_ref[yi, xi]
