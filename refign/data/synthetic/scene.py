"""Procedural driving-scene layouts labelled with the 19 Cityscapes train ids.

A scene is drawn on a canvas larger than the camera views so that two views (target and reference) can be cut
from it with different homographies. Static structure (road, sidewalk, buildings, vegetation, poles, …) and
dynamic objects (cars, people, …) are kept apart so that a view may move or drop dynamic objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from refign.data.classes import CLASS_IDS as C

IGNORE = 255


@dataclass
class DynamicObject:
    """A movable object: a label-space drawing recipe and its canvas position (x of centre, y of ground)."""

    kind: str
    x: float
    y: float
    scale: float
    colour: tuple[int, int, int]


@dataclass
class Scene:
    """Static label canvas, horizon row and the dynamic objects standing in it."""

    static: np.ndarray  # (H, W) uint8 train ids
    horizon: int
    vanish_x: float
    objects: list[DynamicObject] = field(default_factory=list)
    lamp_xy: list[tuple[int, int]] = field(default_factory=list)


def _fill_poly(label: np.ndarray, pts: list[tuple[float, float]], cls: int) -> None:
    cv2.fillPoly(label, [np.round(np.asarray(pts)).astype(np.int32)], int(cls))


def _rect(label: np.ndarray, x0: float, y0: float, x1: float, y1: float, cls: int) -> None:
    h, w = label.shape
    xa, xb = int(np.clip(round(x0), 0, w)), int(np.clip(round(x1), 0, w))
    ya, yb = int(np.clip(round(y0), 0, h)), int(np.clip(round(y1), 0, h))
    label[ya:yb, xa:xb] = cls


def make_static(rng: np.random.Generator, size: tuple[int, int]) -> Scene:
    """Sky, buildings/vegetation above the horizon, a perspective road with sidewalks below it."""
    h, w = size
    label = np.full((h, w), C["sky"], np.uint8)
    horizon = int(h * rng.uniform(0.42, 0.52))
    vx = w * rng.uniform(0.4, 0.6)

    # Skyline: a row of building blocks with gaps filled by trees or left open to the sky.
    x = -rng.uniform(0, 20)
    while x < w:
        bw = rng.uniform(0.08, 0.25) * w
        r = rng.random()
        top = horizon - rng.uniform(0.15, 0.42) * h
        if r < 0.62:
            _rect(label, x, top, x + bw, horizon + 2, C["building"])
        elif r < 0.9:
            tree_top = horizon - rng.uniform(0.1, 0.3) * h
            cv2.ellipse(
                label,
                (int(x + bw / 2), int(tree_top + 0.5 * (horizon - tree_top))),
                (int(bw / 2), int((horizon - tree_top) / 1.6)),
                0,
                0,
                360,
                int(C["vegetation"]),
                -1,
            )
            _rect(label, x, (horizon + tree_top) / 2, x + bw, horizon + 2, C["vegetation"])
        x += bw

    # Ground: terrain everywhere, then sidewalks and the road as perspective wedges from the vanishing point.
    label[horizon:] = C["terrain"]
    road_half = w * rng.uniform(0.32, 0.5)
    walk = w * rng.uniform(0.14, 0.25)
    _fill_poly(
        label,
        [(vx - 4, horizon), (vx + 4, horizon), (vx + road_half + walk, h), (vx - road_half - walk, h)],
        C["sidewalk"],
    )
    _fill_poly(
        label, [(vx - 2, horizon), (vx + 2, horizon), (vx + road_half, h), (vx - road_half, h)], C["road"]
    )

    def ground_x(side: int, t: float, offset: float) -> float:
        """x on the sidewalk at depth t in (0, 1] (0 = horizon, 1 = bottom), offset in sidewalk widths."""
        return vx + side * t * (road_half + offset * walk)

    # Walls and fences along the outer edge of the sidewalks.
    for side in (-1, 1):
        if rng.random() < 0.6:
            t0, t1 = sorted(rng.uniform(0.15, 0.9, 2))
            cls = C["wall"] if rng.random() < 0.45 else C["fence"]
            hgt = rng.uniform(0.06, 0.12) * h
            pts = [
                (ground_x(side, t0, 1.0), horizon + t0 * (h - horizon)),
                (ground_x(side, t1, 1.0), horizon + t1 * (h - horizon)),
            ]
            poly = [
                pts[0],
                pts[1],
                (pts[1][0], pts[1][1] - hgt * t1 * 2),
                (pts[0][0], pts[0][1] - hgt * t0 * 2),
            ]
            _fill_poly(label, poly, cls)

    scene = Scene(label, horizon, vx)
    # Poles carrying traffic signs, traffic lights or street lamps.
    for _ in range(rng.integers(1, 5)):
        side = rng.choice([-1, 1])
        t = rng.uniform(0.2, 0.8)
        px, py = ground_x(side, t, 0.6), horizon + t * (h - horizon)
        ph, pw = (0.25 + 0.35 * t) * h, max(1.5, 3.5 * t)
        _rect(label, px - pw / 2, py - ph, px + pw / 2, py, C["pole"])
        r = rng.random()
        if r < 0.4:
            s = 4 + 7 * t
            cv2.circle(label, (int(px), int(py - ph)), int(s), int(C["traffic sign"]), -1)
        elif r < 0.75:
            s = 3 + 5 * t
            _rect(label, px - s, py - ph - 2.6 * s, px + s, py - ph + 0.4 * s, C["traffic light"])
        else:
            scene.lamp_xy.append((int(px), int(py - ph)))
    return scene


def place_objects(rng: np.random.Generator, scene: Scene, size: tuple[int, int]) -> None:
    """Cars on the road, people on the sidewalks; large vehicles and riders are rare, as in real data."""
    h, w = size
    kinds = (
        ["car"] * 10 + ["person"] * 6 + ["truck", "bus", "rider_bicycle", "rider_motorcycle"] + ["bicycle"]
    )
    for _ in range(rng.integers(2, 8)):
        kind = str(rng.choice(kinds))
        if kind == "car" and rng.random() < 0.03:
            kind = "train"
        t = rng.uniform(0.15, 0.95)
        y = scene.horizon + t * (h - scene.horizon)
        on_walk = kind in ("person", "bicycle")
        lateral = rng.uniform(0.7, 1.25) if on_walk else rng.uniform(-0.8, 0.8)
        x = scene.vanish_x + lateral * t * 0.42 * w * rng.choice([-1, 1])
        colour = tuple(int(c) for c in rng.integers(20, 235, 3))
        scene.objects.append(DynamicObject(kind, x, y, t, colour))


def draw_object(label: np.ndarray, obj: DynamicObject, h: int) -> list[tuple]:
    """Draw one object's label shape; returns light sources ``(x, y, kind)`` it carries (for night renders)."""
    s = 0.75 * obj.scale * h
    x, y = obj.x, obj.y
    lights: list[tuple] = []
    if obj.kind in ("car", "truck", "bus", "train"):
        wl, hl = {"car": (0.45, 0.2), "truck": (0.5, 0.38), "bus": (0.8, 0.4), "train": (1.3, 0.42)}[obj.kind]
        cls = C[obj.kind]
        _rect(label, x - wl * s / 2, y - hl * s, x + wl * s / 2, y, cls)
        if obj.kind == "car":
            _rect(label, x - wl * s / 3, y - hl * s * 1.6, x + wl * s / 3, y - hl * s * 0.9, cls)
        lights = [
            (x - wl * s * 0.4, y - hl * s * 0.35, "head"),
            (x + wl * s * 0.4, y - hl * s * 0.35, "head"),
        ]
    elif obj.kind == "person":
        _rect(label, x - 0.035 * s, y - 0.32 * s, x + 0.035 * s, y, C["person"])
        cv2.circle(label, (int(x), int(y - 0.36 * s)), max(1, int(0.035 * s)), int(C["person"]), -1)
    else:
        vehicle = C["motorcycle"] if obj.kind == "rider_motorcycle" else C["bicycle"]
        _rect(label, x - 0.12 * s, y - 0.1 * s, x + 0.12 * s, y, vehicle)
        if obj.kind != "bicycle":
            _rect(label, x - 0.035 * s, y - 0.36 * s, x + 0.035 * s, y - 0.08 * s, C["rider"])
            cv2.circle(label, (int(x), int(y - 0.4 * s)), max(1, int(0.035 * s)), int(C["rider"]), -1)
        if obj.kind == "rider_motorcycle":
            lights = [(x + 0.12 * s, y - 0.07 * s, "head")]
    return lights


def compose(scene: Scene, objects: list[DynamicObject]) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Label canvas with the given objects drawn far-to-near; also a dynamic-pixel mask and light sources."""
    label = scene.static.copy()
    lights: list[tuple] = [(x, y, "lamp") for x, y in scene.lamp_xy]
    for obj in sorted(objects, key=lambda o: o.y):
        lights += draw_object(label, obj, label.shape[0])
    dynamic = np.isin(
        label, [C[k] for k in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")]
    )
    return label, dynamic, lights


def perturb_objects(
    rng: np.random.Generator, objects: list[DynamicObject], p_drop: float, max_shift: float
) -> list[DynamicObject]:
    """The reference view's objects: some removed, the others moved (traffic changes between drives)."""
    kept = []
    for o in objects:
        if rng.random() < p_drop:
            continue
        kept.append(DynamicObject(o.kind, o.x + rng.uniform(-max_shift, max_shift), o.y, o.scale, o.colour))
    return kept
