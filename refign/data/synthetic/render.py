"""Per-class procedural textures (clear day) and the adverse-condition renderers (night, fog, rain, snow).

Textures are drawn in canvas coordinates, so they move with the geometry when a view is cut out. Colours of
several classes overlap on purpose (road, sidewalk, wall and building are all greyish): the texture, not the
colour alone, identifies a class. The adverse renderers act after the view is cut, on the view image, and
hit the large static classes hardest, as real darkness, fog and snow do.
"""

from __future__ import annotations

import cv2
import numpy as np

from refign.data.classes import CLASS_IDS as C
from refign.data.synthetic.scene import DynamicObject, draw_object

LARGE_STATIC = ("road", "sidewalk", "building", "wall", "fence", "vegetation", "terrain", "sky")


def smooth_noise(rng: np.random.Generator, size: tuple[int, int], cell: int) -> np.ndarray:
    """Value noise in [-1, 1] with features of about ``cell`` pixels."""
    h, w = size
    grid = rng.uniform(-1, 1, (h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) / 255 + rng.uniform(-amount, amount, 3), 0, 1)


def static_textures(rng: np.random.Generator, size: tuple[int, int]) -> dict[int, np.ndarray]:
    """One (H, W, 3) float texture per static class, drawn once per scene."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fine = lambda s: rng.normal(0, s, (h, w, 1)).astype(np.float32)  # noqa: E731
    tex: dict[int, np.ndarray] = {}
    tex[C["road"]] = (
        _jitter(rng, (88, 88, 94), 0.04) + fine(0.035) + 0.03 * smooth_noise(rng, size, 24)[..., None]
    )
    bricks = ((yy % 6 < 1) | ((xx + 4 * ((yy // 6) % 2)) % 9 < 1)).astype(np.float32)[..., None]
    tex[C["sidewalk"]] = _jitter(rng, (140, 128, 132), 0.04) - 0.16 * bricks + fine(0.015)
    hue = smooth_noise(rng, (1, w), 40)[0][None, :, None]
    windows = (((yy % 9) > 3) & ((xx % 8) > 3)).astype(np.float32)[..., None]
    tex[C["building"]] = _jitter(rng, (120, 110, 100), 0.05) + 0.12 * hue - 0.22 * windows + fine(0.01)
    tex[C["wall"]] = _jitter(rng, (165, 155, 128), 0.05) + 0.04 * smooth_noise(rng, size, 6)[..., None]
    slats = (xx % 4 < 2).astype(np.float32)[..., None]
    tex[C["fence"]] = _jitter(rng, (125, 105, 85), 0.05) + 0.18 * slats
    tex[C["pole"]] = _jitter(rng, (125, 125, 128), 0.03) + 0.05 * np.sin(xx * 1.5)[..., None]
    tex[C["traffic light"]] = np.broadcast_to(_jitter(rng, (45, 45, 40), 0.02), (h, w, 3)).copy()
    tex[C["traffic sign"]] = np.broadcast_to(_jitter(rng, (210, 195, 40), 0.05), (h, w, 3)).copy()
    leaves = smooth_noise(rng, size, 3)[..., None]
    tex[C["vegetation"]] = _jitter(rng, (60, 105, 42), 0.04) + 0.14 * leaves
    tex[C["terrain"]] = _jitter(rng, (135, 150, 95), 0.05) + 0.08 * smooth_noise(rng, size, 12)[..., None]
    sky_grad = (yy / h)[..., None]
    tex[C["sky"]] = (
        _jitter(rng, (120, 160, 215), 0.04) + 0.25 * sky_grad + 0.05 * smooth_noise(rng, size, 40)[..., None]
    )
    return {k: np.clip(v, 0, 1).astype(np.float32) for k, v in tex.items()}


def paint_objects(img: np.ndarray, objects: list[DynamicObject], rng: np.random.Generator) -> None:
    """Paint dynamic objects in place, far to near: body colour per instance, dark glass, legs, heads."""
    h, w = img.shape[:2]
    for obj in sorted(objects, key=lambda o: o.y):
        mask_canvas = np.full((h, w), 255, np.uint8)
        draw_object(mask_canvas, obj, h)
        m = mask_canvas != 255
        if not m.any():
            continue
        ys = np.nonzero(m.any(1))[0]
        top, bot = ys[0], ys[-1] + 1
        rows = np.arange(h)[:, None]
        body = np.asarray(obj.colour, np.float32) / 255
        img[m] = body + rng.normal(0, 0.02, (int(m.sum()), 3))
        upper = m & (rows < top + 0.3 * (bot - top))
        lower = m & (rows > top + 0.75 * (bot - top))
        if obj.kind in ("car", "truck", "bus", "train"):
            img[upper] = (0.2, 0.24, 0.3)
            img[lower] = img[lower] * 0.5
        elif obj.kind in ("person", "rider_bicycle", "rider_motorcycle"):
            img[upper & (rows < top + 0.12 * (bot - top))] = (0.85, 0.65, 0.5)
            img[lower] = (0.15, 0.18, 0.35)


def render_clear(
    label: np.ndarray, textures: dict[int, np.ndarray], objects: list[DynamicObject], rng: np.random.Generator
) -> np.ndarray:
    """Clear-day canvas image in [0, 1]: static textures by label, then the objects on top."""
    img = np.zeros((*label.shape, 3), np.float32)
    for cls, tex in textures.items():
        m = label == cls
        img[m] = tex[m]
    paint_objects(img, objects, rng)
    return img


def ground_depth(label: np.ndarray, horizon: int) -> np.ndarray:
    """A depth proxy in [0, 1] (1 = infinitely far): rows near the horizon are far, the sky is farthest."""
    h, w = label.shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    t = np.clip((rows - horizon) / (h - horizon), 0.02, 1)
    depth = np.broadcast_to(np.clip(0.05 / t, 0, 0.92), (h, w)).copy()
    depth[label == C["sky"]] = 1.0
    above = (rows < horizon) & (label != C["sky"])
    depth[above] = 0.9
    return depth


def _glow(size: tuple[int, int], lights: list[tuple], strength: float, radius: float) -> np.ndarray:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w), np.float32)
    for x, y, kind in lights:
        r = radius * (1.6 if kind == "lamp" else 1.0)
        out += strength * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r**2))
    return out


def night(
    img: np.ndarray, label: np.ndarray, depth: np.ndarray, lights: list[tuple], rng: np.random.Generator
) -> np.ndarray:
    """Darkness: everything dim and noisy, lit windows and light sources the only strong cues."""
    out = img**1.2 * rng.uniform(0.22, 0.35) * np.array([0.8, 0.85, 1.1], np.float32)
    out[label == C["sky"]] = (0.02, 0.02, 0.05)
    buildings = label == C["building"]
    lit = (rng.random(label.shape) < 0.02) & buildings
    out[cv2.dilate(lit.astype(np.uint8), np.ones((2, 3), np.uint8)).astype(bool) & buildings] = (
        0.7,
        0.6,
        0.3,
    )
    glow = _glow(label.shape, lights, 0.6, max(2.0, label.shape[0] / 40))[..., None]
    out = out + glow * np.array([1.0, 0.85, 0.55], np.float32)
    return out + rng.normal(0, 0.025, out.shape).astype(np.float32)


def fog(
    img: np.ndarray, label: np.ndarray, depth: np.ndarray, lights: list[tuple], rng: np.random.Generator
) -> np.ndarray:
    """Koschmieder fog: transmission falls with depth, far structure fades into the airlight."""
    beta = rng.uniform(1.5, 2.5)
    t = np.exp(-beta * depth)[..., None]
    air = rng.uniform(0.65, 0.8)
    out = img * t + air * (1 - t)
    return out + rng.normal(0, 0.015, out.shape).astype(np.float32)


def rain(
    img: np.ndarray, label: np.ndarray, depth: np.ndarray, lights: list[tuple], rng: np.random.Generator
) -> np.ndarray:
    """Dull, desaturated, blurred, with bright streaks."""
    grey = img.mean(-1, keepdims=True)
    out = (0.5 * img + 0.5 * grey) * rng.uniform(0.6, 0.75)
    out = cv2.GaussianBlur(out, (0, 0), 0.9)
    h, w = label.shape
    streaks = np.zeros((h, w), np.float32)
    for _ in range(int(h * w / 120)):
        x, y = rng.integers(0, w), rng.integers(0, h)
        ln = rng.integers(3, 8)
        cv2.line(streaks, (int(x), int(y)), (int(x + ln // 3), int(y + ln)), 1.0, 1)
    out = out + 0.22 * streaks[..., None]
    return out + rng.normal(0, 0.02, out.shape).astype(np.float32)


def snow(
    img: np.ndarray, label: np.ndarray, depth: np.ndarray, lights: list[tuple], rng: np.random.Generator
) -> np.ndarray:
    """Snow cover on the ground classes, a grey sky, low contrast and falling flakes."""
    ground = np.isin(label, [C["road"], C["sidewalk"], C["terrain"], C["vegetation"]])
    cover = np.clip(0.5 + 0.35 * smooth_noise(rng, label.shape, 10), 0, 1)[..., None] * ground[..., None]
    out = img * (1 - cover) + 0.9 * cover
    out = 0.6 * out + 0.3
    out[label == C["sky"]] = 0.75
    flakes = (rng.random(label.shape) < 0.03)[..., None]
    out = np.where(flakes, 0.97, out)
    return out + rng.normal(0, 0.02, out.shape).astype(np.float32)


CONDITIONS = {"night": night, "fog": fog, "rain": rain, "snow": snow}


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
