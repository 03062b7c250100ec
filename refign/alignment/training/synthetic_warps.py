"""Random dense warps for warp-consistency training (docs/uawarpc.md#synthetic-warps): homography, TPS, affine∘TPS, elastic.

Each generator returns a normalised *mapping* m (2, H, W) in the align-corners convention (pixel i at
2i/(N−1) − 1) on the prime image's grid, pointing into the image the prime is made from; ``mapping_to_flow``
turns it into a pixel flow. Invalid positions carry −1e10 (masked downstream).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from refign.alignment.warp import pixel_grid, warp
from refign.utils.imaging import gaussian_blur

INVALID = -1e10


@dataclass
class WarpConfig:
    """Ranges of the random warps (uniform sampling); defaults = stage 1 of the official configs."""

    transforms: tuple[str, ...] = ("hom", "tps", "afftps")
    t_hom: float = 0.333
    t_tps: float = 0.333
    t_tps_for_afftps: float = 0.08
    alpha: float = 0.26
    scale: float = 0.45
    tx: float = 0.25
    ty: float = 0.25
    elastic: bool = False


def _uniform(n: int, t: float) -> torch.Tensor:
    return (torch.rand(n, dtype=torch.float64) * 2 - 1) * t


def normalised_grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, dtype=torch.float64),
        torch.linspace(-1, 1, w, dtype=torch.float64),
        indexing="ij",
    )
    return xs, ys


def homography_mapping(h: int, w: int, t: float) -> torch.Tensor:
    """Corners of [−1, 1]² moved by U(−t, t) each; the DLT homography between them applied to the grid."""
    src = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], dtype=torch.float64)
    dst = src + _uniform(8, t).view(4, 2)
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src.tolist(), dst.tolist(), strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    sol = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))
    hom = torch.cat([sol, sol.new_ones(1)]).view(3, 3)
    xs, ys = normalised_grid(h, w)
    pts = hom @ torch.stack([xs.flatten(), ys.flatten(), torch.ones_like(xs).flatten()])
    return (pts[:2] / pts[2:]).view(2, h, w).float()


def _tps_kernel(d2: torch.Tensor) -> torch.Tensor:
    return torch.where(d2 > 0, d2 * torch.log(d2.clamp(min=1e-30)), torch.zeros_like(d2))


def tps_mapping(h: int, w: int, t: float) -> torch.Tensor:
    """3×3 control points on {−1, 0, 1}² moved by U(−t, t); thin-plate spline interpolation of the grid."""
    v = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    px, py = v.repeat_interleave(3), v.repeat(3)  # k = 3a + b: P_x = v[a], P_y = v[b]
    q = torch.stack([px, py], 1) + _uniform(18, t).view(9, 2)
    k = _tps_kernel((px[:, None] - px[None]) ** 2 + (py[:, None] - py[None]) ** 2)
    p = torch.stack([torch.ones(9, dtype=torch.float64), px, py], 1)
    lmat = torch.zeros(12, 12, dtype=torch.float64)
    lmat[:9, :9], lmat[:9, 9:], lmat[9:, :9] = k, p, p.T
    coef = torch.linalg.solve(lmat, torch.cat([q, torch.zeros(3, 2, dtype=torch.float64)]))
    xs, ys = normalised_grid(h, w)
    u = _tps_kernel((xs[..., None] - px) ** 2 + (ys[..., None] - py) ** 2)  # (h, w, 9)
    affine = coef[9] + xs[..., None] * coef[10] + ys[..., None] * coef[11]  # (h, w, 2)
    return (affine + u @ coef[:9]).permute(2, 0, 1).float()


def _rot(a: float) -> torch.Tensor:
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def affine_tps_mapping(h: int, w: int, cfg: WarpConfig) -> torch.Tensor:
    """Random similarity-with-shear affine composed with a mild TPS: m(p) = aff(tps(p))."""
    alpha, phi = _uniform(2, cfg.alpha).tolist()
    lam = 1 + _uniform(1, cfg.scale).item()
    a = _rot(alpha) @ _rot(phi).T @ torch.diag(torch.tensor([lam, lam])) @ _rot(phi)
    theta = torch.cat([a, torch.tensor([[_uniform(1, cfg.tx).item()], [_uniform(1, cfg.ty).item()]])], 1)
    # the official code builds the affine grid with align_corners=False and reads it with the
    # align-corners formula (a ≤ half-pixel offset in the synthetic GT, docs/quirks.md#w4): kept as is
    aff = F.affine_grid(theta[None], [1, 2, h, w], align_corners=False)[0].permute(2, 0, 1)
    aff = torch.where((aff.abs() < 1).all(0, keepdim=True), aff, torch.full_like(aff, INVALID))
    tps = tps_mapping(h, w, cfg.t_tps_for_afftps)
    out = F.grid_sample(aff[None], tps.permute(1, 2, 0)[None], mode="bilinear", align_corners=True)[0]
    return torch.where((tps.abs() < 1).all(0, keepdim=True), out, torch.full_like(out, INVALID))


def mapping_to_pixel_flow(mapping: torch.Tensor) -> torch.Tensor:
    _, h, w = mapping.shape
    scale = mapping.new_tensor([(w - 1) / 2, (h - 1) / 2]).view(2, 1, 1)
    return (mapping + 1) * scale - pixel_grid(h, w)


def smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of a (C, H, W) field with radius 4σ (at most the field's side), reflect borders."""
    _, h, w = x.shape
    r = max(1, min(int(4 * sigma + 0.5), h - 1, w - 1))
    return gaussian_blur(x[None], sigma, (2 * r + 1, 2 * r + 1))[0]


def elastic_perturbation(h: int, w: int) -> torch.Tensor:
    """(2, H, W) pixel displacement: blurred noise restricted to a few random Gaussian blobs."""
    side = max(h, w)
    sigma = side * (0.1 + 0.08 * random.random())
    amp = side * (1 + random.random())
    field = smooth(torch.rand(2, h, w) * 2 - 1, sigma) * amp
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    mask = torch.zeros(h, w)
    for _ in range(random.randint(5, 13)):
        s = random.randint(10, 40)
        cx = random.uniform(min(3 * s, w / 2), max(w - 3 * s, w / 2))
        cy = random.uniform(min(3 * s, h / 2), max(h - 3 * s, h / 2))
        g = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s * s))
        mask += (2 * g / g.max()).clamp(0, 1)
    return field * mask.clamp(0, 1)


def random_flow(h: int, w: int, cfg: WarpConfig) -> torch.Tensor:
    """One random synthetic flow (2, H, W) in pixels, from a uniformly chosen transform family."""
    kind = random.choice(cfg.transforms)
    if kind == "hom":
        mapping = homography_mapping(h, w, cfg.t_hom)
    elif kind == "tps":
        mapping = tps_mapping(h, w, cfg.t_tps)
    elif kind == "afftps":
        mapping = affine_tps_mapping(h, w, cfg)
    else:
        raise ValueError(f"unknown synthetic transform {kind!r}")
    flow = mapping_to_pixel_flow(mapping)
    if cfg.elastic:
        absolute = (flow + pixel_grid(h, w))[None]
        moved = warp(absolute, elastic_perturbation(h, w)[None])[0]  # M(p + δ(p))
        flow = moved - pixel_grid(h, w)
    return flow
