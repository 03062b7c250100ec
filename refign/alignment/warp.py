"""Backward warping by a dense flow, with the official coordinate convention (docs/uawarpc.md#warp).

Pixel ``i`` sits at normalised coordinate ``2i/(W-1) - 1`` (``align_corners=True``); this is the convention
the pretrained matcher was trained with, so it must not be "fixed" to the half-pixel one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_grid(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """(2, H, W) float grid of integer pixel centres: channel 0 = column x, channel 1 = row y."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack((xs, ys))


def normalised_sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 2) grid for ``grid_sample(align_corners=True)`` from a (B, 2, H, W) pixel flow."""
    _, _, h, w = flow.shape
    v = pixel_grid(h, w, flow.device)[None] + flow.float()
    vx = 2.0 * v[:, 0] / max(w - 1, 1) - 1.0
    vy = 2.0 * v[:, 1] / max(h - 1, 1) - 1.0
    return torch.stack((vx, vy), dim=-1)


def warp(
    x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros", return_mask: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample ``x`` at ``p + flow(p)`` for every pixel ``p`` of the flow's grid (bilinear, fp32).

    Args:
        x: (B, C, H, W) tensor to warp (the "source").
        flow: (B, 2, H, W) displacements in pixels of ``x``'s grid; channel 0 = x (columns).
        padding_mode: ``grid_sample`` padding outside ``x``.
        return_mask: also return the (B, H, W) bool mask of samples *strictly* inside ``x``
            (border-exact samples count as invalid, as in the official code).
    """
    if x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"warp: x has spatial size {tuple(x.shape[-2:])}, flow {tuple(flow.shape[-2:])}")
    with torch.autocast(device_type=x.device.type, enabled=False):
        grid = normalised_sampling_grid(flow)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
    # exactly zero flow: the identity, without resampling blur. Chosen on the device (no host sync per call).
    identity = ~torch.any(flow)
    out = torch.where(identity, x.float(), out)
    if not return_mask:
        return out
    mask = (grid > -1).all(-1) & (grid < 1).all(-1)
    return out, mask | identity


def inbounds_mask(flow: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: ``p + flow(p)`` lies inside the image, borders *included* (GT correspondence mask)."""
    _, _, h, w = flow.shape
    v = pixel_grid(h, w, flow.device)[None] + flow.float()
    return (v[:, 0] >= 0) & (v[:, 0] <= w - 1) & (v[:, 1] >= 0) & (v[:, 1] <= h - 1)


def scale_flow(flow: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Multiply the x and y components by separate factors (a change of pixel units)."""
    return flow * flow.new_tensor([sx, sy]).view(1, 2, 1, 1)
