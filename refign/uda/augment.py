"""DACS strong photometric augmentation: colour jitter and Gaussian blur (docs/self-training.md#strong-augmentation).

kornia is not a dependency, so both are written here with kornia 0.5.8's semantics, which produced the
published numbers: brightness is additive, contrast and saturation multiplicative, hue a rotation in
radians, each op clamped to [0, 1] and the four applied in a random order per image; the blur is a separable
Gaussian with reflect borders on the normalised image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils._python_dispatch import _disable_current_modes

from refign.utils.imaging import denormalize, gaussian_blur, normalize

EPS = 1e-6  # kornia 0.5.8 ``rgb_to_hsv``: saturation = delta / (max + eps)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) RGB in [0, 1] → HSV with hue in radians [0, 2π) (kornia's convention)."""
    maxc, argmax = rgb.max(-3)
    delta = maxc - rgb.min(-3).values
    sat = delta / (maxc + EPS)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    r, g, b = rgb.unbind(-3)
    candidates = torch.stack([(g - b) / safe, 2 + (b - r) / safe, 4 + (r - g) / safe], -3)
    hue = candidates.gather(-3, argmax.unsqueeze(-3)).squeeze(-3)
    hue = torch.where(delta == 0, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6, 1.0) * 2 * math.pi
    return torch.stack([hue, sat, maxc], -3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv` (hue taken modulo 2π)."""
    hue, sat, val = hsv.unbind(-3)
    h6 = torch.remainder(hue / (2 * math.pi), 1.0) * 6
    sector = torch.floor(h6).long() % 6
    f = h6 - torch.floor(h6)
    p, q, t = val * (1 - sat), val * (1 - f * sat), val * (1 - (1 - f) * sat)
    table = torch.stack(
        [
            torch.stack([val, q, p, p, t, val], -3),  # red per sector
            torch.stack([t, val, val, q, p, p], -3),  # green
            torch.stack([p, p, t, val, val, q], -3),  # blue
        ],
        -4,
    )  # (…, 3, 6, H, W)
    index = sector.unsqueeze(-3).unsqueeze(-4).expand(*table.shape[:-3], 1, *table.shape[-2:])
    return table.gather(-3, index).squeeze(-3)


def adjust_brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    return (x + (factor - 1)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    return (x * factor).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    h, s, v = rgb_to_hsv(x).unbind(-3)
    return hsv_to_rgb(torch.stack([h, (s * factor).clamp(0, 1), v], -3)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue by ``shift`` radians."""
    h, s, v = rgb_to_hsv(x).unbind(-3)
    return hsv_to_rgb(torch.stack([h + shift, s, v], -3)).clamp(0, 1)


@contextmanager
def host_values() -> Iterator[None]:
    """Random factors and orders are host numbers drawn from torch's CPU generator, as kornia 0.5 draws them.
    They are drawn outside any tensor mode the step may run under (a fake-tensor trace or a FLOP counter,
    ``refign.estimate``), where a drawn tensor would be fake and have no value to read; in training no mode
    is active and this changes nothing."""
    with _disable_current_modes():
        yield


def random_order() -> list[int]:
    """A random order of the four jitter ops (kornia draws one per call)."""
    with host_values():
        return torch.randperm(4).tolist()


def color_jitter(image: torch.Tensor, strength: float, order: list[int] | None = None) -> torch.Tensor:
    """kornia 0.5 ``ColorJitter(s, s, s, s)`` on one de-normalised (3, H, W) image in [0, 1].

    Factors: brightness, contrast, saturation ~ U[max(0, 1−s), 1+s], hue ~ U[−s, s]·2π rad; the four ops
    in a random order, drawn here unless ``order`` is given (kornia draws one order per call, so a batch
    jittered in one call, as MIC's, shares it). ``strength == 0`` is the identity (up to the [0, 1] clamp).
    """
    low = max(0.0, 1.0 - strength)
    with host_values():
        factors = (torch.empty(3).uniform_(low, 1.0 + strength) if strength > 0 else torch.ones(3)).tolist()
        hue = float(torch.empty(()).uniform_(-strength, strength)) * 2 * math.pi if strength > 0 else 0.0
    ops = [
        lambda x: adjust_brightness(x, factors[0]),
        lambda x: adjust_contrast(x, factors[1]),
        lambda x: adjust_saturation(x, factors[2]),
        lambda x: adjust_hue(x, hue),
    ]
    for i in order if order is not None else random_order():
        image = ops[i](image)
    return image


def blur_kernel_size(length: int) -> int:
    """⌈0.1·L⌉, made odd by subtracting one when even (512 → 51, 1024 → 103)."""
    k = math.ceil(0.1 * length)
    return k if k % 2 else k - 1


def dacs_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """kornia ``GaussianBlur2d`` as DACS configures it: kernel sides from :func:`blur_kernel_size`."""
    size = (blur_kernel_size(image.shape[-2]), blur_kernel_size(image.shape[-1]))
    return gaussian_blur(image, sigma, size)


def strong_photometric(
    images: torch.Tensor,
    jitter_draw: float,
    blur_draw: float,
    jitter_s: float,
    jitter_p: float,
    blur: bool,
    sigma_range: tuple[float, float],
) -> torch.Tensor:
    """Colour jitter (when ``jitter_draw > jitter_p``) then blur (when ``blur`` and ``blur_draw > 0.5``).

    The two draws are made once per batch by the caller (docs/quirks.md#q9); jitter factors and σ are per image.
    ``images`` are ImageNet-normalised; jitter works on the de-normalised image, blur on the normalised one.
    """
    out = []
    for image in images:
        x = image.unsqueeze(0)
        if jitter_draw > jitter_p:
            x = normalize(color_jitter(denormalize(x), jitter_s))
        if blur and blur_draw > 0.5:
            x = dacs_blur(x, float(np.random.uniform(*sigma_range)))
        out.append(x)
    return torch.cat(out)
