"""Warp-consistency training losses of UAWarpC (docs/uawarpc.md#losses).

All flows are in pixels of the full training image at every level; ground truth and masks are resized to
each level's grid (bilinear, ``align_corners=False``; values are not rescaled). Every level's loss is the
negative log-likelihood of a 2-D isotropic Gaussian with a Huber-robustified squared error.
"""

from __future__ import annotations

import math

import torch

from refign.alignment.warp import inbounds_mask, scale_flow, warp
from refign.utils.imaging import resize

Level = tuple[torch.Tensor, torch.Tensor]  # (flow (B,2,h,w), log-variance (B,1|2,h,w))
LOG_2PI = math.log(2 * math.pi)


def huber2(d: torch.Tensor) -> torch.Tensor:
    """Doubled Huber with δ = 1 (d² inside, 2|d| − 1 outside), summed over the 2 flow components."""
    a = d.abs()
    return torch.where(a < 1, d * d, 2 * a - 1).sum(1)


def level_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A low-resolution pixel is valid only if its bilinearly interpolated mask value is exactly 1."""
    return torch.floor(resize(mask[:, None].float(), size))[:, 0].bool()


def gaussian_nll(
    flow: torch.Tensor, logvar: torch.Tensor, flow_gt: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """One level: mean over valid pixels of 0.5·exp(−s)·ρ + s + ln 2π (s = log σ²; two channels are
    combined as ln(σ_a² + σ_b²)). Ground truth and mask are brought to the level's grid."""
    size = tuple(flow.shape[-2:])
    gt = resize(flow_gt, size)
    valid = level_mask(mask, size) if mask.shape[-2:] != size else mask
    if not valid.any():
        return flow.sum() * 0.0
    s = torch.logsumexp(logvar, dim=1) if logvar.shape[1] > 1 else logvar[:, 0]
    nll = 0.5 * torch.exp(-s) * huber2(flow - gt) + s + LOG_2PI
    return nll[valid].mean()


def warp_supervision_loss(levels: list[Level], flow_gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Self-supervised loss: the prediction I′→I against the known synthetic flow, summed over levels."""
    return sum(gaussian_nll(f, s, flow_gt, mask) for f, s in levels)


def bipath_loss(
    prime_j: list[Level],
    j_i: list[Level],
    flow_gt: torch.Tensor,
    mask: torch.Tensor,
    visibility_mask: bool = False,
    alpha_1: float = 0.03,
    alpha_2: float = 0.5,
) -> torch.Tensor:
    """W-bipath loss: the composition I′→J→I must equal the known flow I′→I.

    The composed flow is ``A + warp(B, A)``; ``A`` is detached for the sampling positions only, so
    gradients reach A directly and B through the sampled values. ``visibility_mask`` (stage 2) drops pixels
    whose composition disagrees with the known flow beyond α1·(|A|² + |B̃|² + |W|²) + α2.
    """
    h_full, w_full = flow_gt.shape[-2:]
    total = flow_gt.new_zeros(())
    for (a, s_a), (b, s_b) in zip(prime_j, j_i, strict=True):
        h, w = a.shape[-2:]
        a_grid = scale_flow(a.detach(), w / w_full, h / h_full)
        b_w, s_b_w = warp(b, a_grid), warp(s_b, a_grid)
        composed = a + b_w
        valid = inbounds_mask(a_grid) & level_mask(mask, (h, w))
        gt = resize(flow_gt, (h, w))
        if visibility_mask:
            with torch.no_grad():
                sq = lambda t: (t * t).sum(1)
                err = sq(composed - gt)
                valid &= err <= alpha_1 * (sq(a) + sq(b_w) + sq(gt)) + alpha_2
        total = total + gaussian_nll(composed, torch.cat([s_a, s_b_w], 1), gt, valid)
    return total


@torch.no_grad()
def balance_weights(loss_ss: torch.Tensor, loss_us: torch.Tensor, mode: str) -> tuple[float, float]:
    """Weights (w_ss, w_us) of the two losses: up-weight the smaller one (cap 100).

    ``official`` reproduces the executed code path of the official repository, whose call passes ``False``
    as the weight ratio (docs/quirks.md#w1): if L_us > L_ss only L_us is used, else L_ss + 100·L_us (inf/NaN
    weights when L_ss ≤ 0, exactly like the original). ``intended`` is the GLU-Net/WarpC rule (ratio 1).
    """
    if mode not in ("official", "intended"):
        raise ValueError(f"loss_weighting must be 'official' or 'intended', got {mode!r}")
    ratio = 0.0 if mode == "official" else 1.0
    if loss_us > loss_ss:
        w_ss = torch.clamp(loss_us / loss_ss.clamp(min=1e-8) * ratio, max=100).item()
        return w_ss, 1.0
    ratio_t = loss_ss.new_tensor(ratio)
    w_us = torch.clamp(loss_ss / loss_us.clamp(min=1e-8) / ratio_t, max=100).item()
    return 1.0, w_us
