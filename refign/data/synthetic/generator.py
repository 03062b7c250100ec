"""Deterministic generation of one synthetic sample (source, or target + reference + ground-truth flow)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refign.data.synthetic import render
from refign.data.synthetic.scene import compose, make_static, perturb_objects, place_objects
from refign.data.synthetic.views import apply_h, cut, flow_between, flow_validity, view_homography

# Bump when the rendering changes so that cached datasets are regenerated.
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class ViewConfig:
    """Camera geometry of the two views (fractions of the canvas) and how traffic differs between them."""

    canvas_scale: float = 1.3
    zoom: float = 0.78
    ref_shift: float = 0.06
    ref_zoom_jitter: float = 0.06
    ref_perspective: float = 0.03
    ref_drop_objects: float = 0.4
    ref_move_objects: float = 0.08


def _canvas_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return int(round(size[0] * scale)), int(round(size[1] * scale))


def generate(seed: tuple[int, ...], size: tuple[int, int], condition: str | None, views: ViewConfig) -> dict:
    """One sample as uint8/float numpy arrays.

    ``condition=None`` gives a clear-day source sample (``image``, ``semantic``); otherwise the target image is
    rendered under ``condition`` and the sample adds ``image_ref`` (clear day, shifted viewpoint, traffic
    changed), ``flow`` (2, H, W) target→reference in pixels and ``flow_valid`` (H, W).
    """
    rng = np.random.default_rng(seed)
    canvas = _canvas_size(size, views.canvas_scale)
    scene = make_static(rng, canvas)
    place_objects(rng, scene, canvas)
    textures = render.static_textures(rng, canvas)
    M_trg = view_homography(rng, canvas, size, views.zoom, (rng.uniform(-0.05, 0.05), 0.0), 0.01)

    label_c, dynamic_c, lights_c = compose(scene, scene.objects)
    img_c = render.render_clear(label_c, textures, scene.objects, rng)
    image = cut(img_c, M_trg, size)
    semantic = cut(label_c, M_trg, size, nearest=True, border=255)
    sample = {"semantic": semantic}
    if condition is None:
        sample["image"] = render.to_uint8(image + rng.normal(0, 0.01, image.shape).astype(np.float32))
        return sample

    depth = cut(render.ground_depth(label_c, scene.horizon), M_trg, size, border=1.0)
    lights = apply_h(np.linalg.inv(M_trg), np.array([[x, y] for x, y, _ in lights_c] or np.zeros((0, 2))))
    lights_v = [(x, y, k) for (x, y), (_, _, k) in zip(lights, lights_c, strict=True)]
    sample["image"] = render.to_uint8(render.CONDITIONS[condition](image, semantic, depth, lights_v, rng))

    zoom = views.zoom * (1 + rng.uniform(-views.ref_zoom_jitter, views.ref_zoom_jitter))
    shift = (
        rng.uniform(-views.ref_shift, views.ref_shift),
        rng.uniform(-views.ref_shift, views.ref_shift) / 3,
    )
    M_ref = view_homography(rng, canvas, size, zoom, shift, views.ref_perspective)
    ref_objects = perturb_objects(
        rng, scene.objects, views.ref_drop_objects, views.ref_move_objects * canvas[1]
    )
    ref_label_c, ref_dynamic_c, _ = compose(scene, ref_objects)
    ref_img_c = render.render_clear(ref_label_c, textures, ref_objects, rng) * rng.uniform(0.9, 1.1)
    sample["image_ref"] = render.to_uint8(cut(ref_img_c, M_ref, size))
    sample["semantic_ref"] = cut(ref_label_c, M_ref, size, nearest=True, border=255)

    flow = flow_between(M_trg, M_ref, size)
    dyn_trg = cut(dynamic_c.astype(np.uint8), M_trg, size, nearest=True).astype(bool)
    dyn_ref = cut(ref_dynamic_c.astype(np.uint8), M_ref, size, nearest=True).astype(bool)
    sample["flow"] = flow
    sample["flow_valid"] = flow_validity(flow, dyn_trg, dyn_ref)
    return sample
