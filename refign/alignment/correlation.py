"""Correlation volumes of the matcher (docs/uawarpc.md#correlation).

Global: every target position against every source position (16×16 level), with NC-Net mutual matching.
Local: a 9×9 window around every target position in the (already warped) source. Both are computed in fp32
under autocast (fp32 islands of a bf16/fp16 step). The local one uses the
``spatial_correlation_sampler`` extension when it is importable (faster, less memory) and an equivalent
pure-PyTorch loop otherwise; both give the same numbers (tests/alignment/test_correlation.py).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

try:
    from spatial_correlation_sampler import spatial_correlation_sample
except ImportError:  # the extension is optional
    spatial_correlation_sample = None

MUTUAL_EPS = 1e-5
_logged_backend = False


def extension_available() -> bool:
    return spatial_correlation_sample is not None


def global_correlation(feat_src: torch.Tensor, feat_trg: torch.Tensor) -> torch.Tensor:
    """(B, Hs·Ws, Ht, Wt) dot products; channel ``k = y_s·Ws + x_s`` (source row-major)."""
    b, c, hs, ws = feat_src.shape
    _, _, ht, wt = feat_trg.shape
    corr = torch.bmm(feat_src.reshape(b, c, hs * ws).transpose(1, 2), feat_trg.reshape(b, c, ht * wt))
    return corr.view(b, hs * ws, ht, wt)


def mutual_matching(corr: torch.Tensor) -> torch.Tensor:
    """Soft mutual nearest neighbour filter: C · ((C / max_over_targets) · (C / max_over_sources))."""
    max_over_src = corr.amax(dim=1, keepdim=True)  # best source for every target position
    max_over_trg = corr.flatten(2).amax(dim=2)[..., None, None]  # best target for every source position
    return corr * ((corr / (max_over_trg + MUTUAL_EPS)) * (corr / (max_over_src + MUTUAL_EPS)))


def local_correlation_torch(feat_trg: torch.Tensor, feat_src: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, P, P, H, W): ``out[b,i,j,y,x] = Σ_c trg[b,c,y,x]·src[b,c,y+i-r,x+j-r]``, zero outside."""
    r = patch_size // 2
    b, _, h, w = feat_trg.shape
    padded = F.pad(feat_src, (r, r, r, r))
    out = feat_trg.new_empty(b, patch_size, patch_size, h, w)
    for i in range(patch_size):
        for j in range(patch_size):
            out[:, i, j] = (feat_trg * padded[:, :, i : i + h, j : j + w]).sum(1)
    return out


def local_correlation(
    feat_trg: torch.Tensor, feat_src: torch.Tensor, patch_size: int = 9, force_torch: bool = False
) -> torch.Tensor:
    """Raw local correlation (B, P·P, H, W), channel ``k = (dy+r)·P + (dx+r)``, computed in fp32."""
    global _logged_backend
    use_ext = extension_available() and not force_torch
    if not _logged_backend:
        log.info(
            "local correlation: %s",
            "spatial_correlation_sampler extension" if use_ext else "pure-PyTorch implementation",
        )
        _logged_backend = True
    b, _, h, w = feat_trg.shape
    with torch.autocast(device_type=feat_trg.device.type, enabled=False):
        trg, src = feat_trg.float(), feat_src.float()
        if use_ext:
            corr = spatial_correlation_sample(trg, src, kernel_size=1, patch_size=patch_size, stride=1)
        else:
            corr = local_correlation_torch(trg, src, patch_size)
    return corr.reshape(b, patch_size * patch_size, h, w)


class GlobalCorrelation(nn.Module):
    """Global cost volume → mutual matching (optional) → ReLU → L2-normalised over source positions."""

    def __init__(self, cyclic_consistency: bool = True) -> None:
        super().__init__()
        self.cyclic_consistency = cyclic_consistency

    def forward(self, feat_src: torch.Tensor, feat_trg: torch.Tensor) -> torch.Tensor:
        # fp32 under autocast, like the local volume: the mutual-matching ratios and the normalisation of
        # 256 small dot products lose most of their digits in bf16 / fp16
        with torch.autocast(device_type=feat_src.device.type, enabled=False):
            corr = global_correlation(feat_src.float(), feat_trg.float())
            if self.cyclic_consistency:
                corr = mutual_matching(corr)
            return F.normalize(F.relu(corr), p=2, dim=1)


class LocalCorrelation(nn.Module):
    """Local cost volume around each target pixel → ReLU → L2-normalised over the P·P displacements."""

    def __init__(self, patch_size: int = 9, force_torch: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.force_torch = force_torch

    def forward(self, feat_src: torch.Tensor, feat_trg: torch.Tensor) -> torch.Tensor:
        corr = local_correlation(feat_trg, feat_src, self.patch_size, self.force_torch)
        return F.normalize(F.relu(corr), p=2, dim=1)
