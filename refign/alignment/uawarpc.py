"""The UAWarpC head: a 4-level coarse-to-fine flow regressor with per-level log-variance (docs/uawarpc.md#architecture).

Levels 4 and 3 run on 256×256 (area-resized) copies of the pair, levels 2 and 1 at 1/8 and 1/4 of the
original size. The coarse side is configurable (``coarse_size``; a smaller one for CPU-scale matchers): level 4
then has a (coarse/16)² global cost volume and level 3 runs on a (coarse/8)² grid. All returned flows are in pixels of the original image (channel 0 = x), pointing from the
target grid into the source; log-variances are in (original pixel)² units.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from refign.alignment.blocks import FlowDecoder, RefinementModule, UncertaintyModule, scaled
from refign.alignment.correlation import GlobalCorrelation, LocalCorrelation
from refign.alignment.warp import pixel_grid, scale_flow, warp
from refign.utils.imaging import resize

COARSE = 256  # side of the official coarse branch's images
Level = tuple[torch.Tensor, torch.Tensor]  # (flow, log-variance)


def mapping_to_flow(mapping: torch.Tensor) -> torch.Tensor:
    """Normalised mapping in [-1, 1] (align-corners convention) → flow in pixels of the same grid."""
    _, _, h, w = mapping.shape
    scale = mapping.new_tensor([(w - 1) / 2, (h - 1) / 2]).view(1, 2, 1, 1)
    return (mapping + 1) * scale - pixel_grid(h, w, mapping.device)[None]


def num_extra_levels(h: int, w: int) -> int:
    """Iterative-refinement levels between 32×32 and 1/8 resolution (added only for sides ≳ 1086 px)."""
    ratio = max(h, w) / 8.0 / 32.0
    return max(0, int(round(math.log(ratio / 3.0) / math.log(2))))


class UAWarpCHead(nn.Module):
    """Flow + uncertainty head on VGG pyramids; submodule names match the official ``alignment_head.*``.

    Args:
        iterative_refinement: in eval mode, insert extra local-correlation levels between 32×32 and 1/8
            resolution for large images (official MegaDepth evaluation; off inside Refign).
        force_torch_correlation: use the pure-PyTorch local correlation even when the extension exists.
        coarse_size: side of the coarse branch's images (official 256); a multiple of 16 up to 256, since
            level 4's global cost volume has (coarse/16)² channels and its uncertainty patch at most 16².
        width: channel factor of every decoder, refinement and uncertainty layer (1.0 = official; the
            state-dict keys are the same at any width, the shapes are not).
    """

    def __init__(
        self,
        iterative_refinement: bool = False,
        force_torch_correlation: bool = False,
        coarse_size: int = COARSE,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if coarse_size % 16 or not 16 <= coarse_size <= COARSE or coarse_size // 16 in range(10, 16):
            raise ValueError(
                f"alignment coarse_size must be a multiple of 16 in [16, 144] or 256, got {coarse_size}"
            )
        self.coarse_size = coarse_size
        self.grid4 = coarse_size // 16  # side of level 4's grid (16 officially)
        self.iterative_refinement = iterative_refinement
        self.global_corr = GlobalCorrelation(cyclic_consistency=True)
        self.local_corr = LocalCorrelation(patch_size=9, force_torch=force_torch_correlation)
        local, w = 9 * 9, width
        self.decoder4 = FlowDecoder(self.grid4**2, w)
        self.decoder3 = FlowDecoder(local + 2 + 1, w)
        self.refinement_module_adaptive = RefinementModule(w)
        self.decoder2 = FlowDecoder(local + 2 + 1, w)
        self.reduce = nn.Conv2d(scaled(32, w), 2, 1)
        self.decoder1 = FlowDecoder(local + 2 + 2 + 1, w)
        self.refinement_module_finest = RefinementModule(w)
        self.estimate_uncertainty_components4 = UncertaintyModule(self.grid4, feed_in_previous=False, width=w)
        self.estimate_uncertainty_components3 = UncertaintyModule(9, feed_in_previous=True, width=w)
        self.estimate_uncertainty_components2 = UncertaintyModule(9, feed_in_previous=True, width=w)
        self.estimate_uncertainty_components1 = UncertaintyModule(9, feed_in_previous=True, width=w)

    def _local_level(
        self,
        decoder: FlowDecoder,
        uncertainty: UncertaintyModule,
        feat_trg: torch.Tensor,
        feat_src: torch.Tensor,
        up_flow: torch.Tensor,
        up_logvar: torch.Tensor,
        warp_scale: tuple[float, float],
        extra: tuple[torch.Tensor, ...] = (),
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Warp the source features by the coarser flow, correlate, decode a residual.

        ``warp_scale`` = (sx, sy) converting ``up_flow``'s units to pixels of this level's grid.
        Returns (residual flow, decoder feature before refinement, log-variance).
        """
        warped = warp(feat_src, scale_flow(up_flow, *warp_scale))
        corr = self.local_corr(warped, feat_trg)
        res, feat = decoder(torch.cat([corr, up_flow, *extra, up_logvar], 1))
        logvar = uncertainty(corr, feat, up_logvar, up_flow)
        return res, feat, logvar

    def forward(
        self,
        trg: list[torch.Tensor],
        src: list[torch.Tensor],
        trg_256: list[torch.Tensor],
        src_256: list[torch.Tensor],
        out_size: tuple[int, int],
    ) -> tuple[Level, Level, Level, Level]:
        """Pyramids: full-res ``[pool2, pool3]``, coarse ``[pool3, pool4]``. Returns levels 4, 3, 2, 1."""
        c11, c12 = (F.normalize(f, dim=1) for f in trg)
        c13, c14 = (F.normalize(f, dim=1) for f in trg_256)
        c21, c22 = (F.normalize(f, dim=1) for f in src)
        c23, c24 = (F.normalize(f, dim=1) for f in src_256)
        coarse, g4 = self.coarse_size, self.grid4
        g3 = 2 * g4
        if c14.shape[-2:] != (g4, g4) or c13.shape[-2:] != (g3, g3):
            raise ValueError(
                f"coarse features must be {g3}×{g3} and {g4}×{g4} (coarse_size {coarse}), "
                f"got {tuple(c13.shape[-2:])}, {tuple(c14.shape[-2:])}"
            )
        h_o, w_o = out_size
        log_diag = 2 * math.log(math.hypot(h_o, w_o) / math.hypot(coarse, coarse))

        # level 4: global correlation, decoder regresses a normalised mapping on the g4×g4 grid
        corr4 = self.global_corr(c24, c14)
        mapping4, x4 = self.decoder4(corr4)
        flow4_256 = mapping_to_flow(mapping4) * (coarse / g4)
        logvar4_256 = self.estimate_uncertainty_components4(corr4, x4) + 2 * math.log(coarse / g4)

        # level 3: local correlation at g3×g3, values in coarse-pixel units
        up_flow4, up_logvar4 = resize(flow4_256, (g3, g3)), resize(logvar4_256, (g3, g3))
        res3, x3, logvar3 = self._local_level(
            self.decoder3,
            self.estimate_uncertainty_components3,
            c13,
            c23,
            up_flow4,
            up_logvar4,
            (g3 / coarse, g3 / coarse),
        )
        flow3 = scale_flow(res3 + self.refinement_module_adaptive(x3) + up_flow4, w_o / coarse, h_o / coarse)
        logvar3 = logvar3 + log_diag

        if self.iterative_refinement and not self.training:
            n_extra = num_extra_levels(h_o, w_o)
            for n in range(n_extra):
                ratio = 1.0 / (8.0 * 2 ** (n_extra - n))
                size = (int(h_o * ratio), int(w_o * ratio))
                up_flow3, up_logvar3 = resize(flow3, size), resize(logvar3, size)
                feat_trg = F.interpolate(c12, size=size, mode="area")
                feat_src = F.interpolate(c22, size=size, mode="area")
                res, _, logvar3 = self._local_level(
                    self.decoder2,
                    self.estimate_uncertainty_components2,
                    feat_trg,
                    feat_src,
                    up_flow3,
                    up_logvar3,
                    (ratio, ratio),
                )
                flow3 = res + up_flow3

        # level 2: 1/8 resolution, original-pixel units from here on
        size2 = tuple(c12.shape[-2:])
        up_flow3, up_logvar3 = resize(flow3, size2), resize(logvar3, size2)
        res2, x2, logvar2 = self._local_level(
            self.decoder2,
            self.estimate_uncertainty_components2,
            c12,
            c22,
            up_flow3,
            up_logvar3,
            (size2[1] / w_o, size2[0] / h_o),
        )
        flow2 = res2 + up_flow3

        # level 1: 1/4 resolution, plus the reduced level-2 decoder feature
        size1 = tuple(c11.shape[-2:])
        up_flow2, up_logvar2 = resize(flow2, size1), resize(logvar2, size1)
        up_feat2 = self.reduce(resize(x2, size1))
        res1, x1, logvar1 = self._local_level(
            self.decoder1,
            self.estimate_uncertainty_components1,
            c11,
            c21,
            up_flow2,
            up_logvar2,
            (size1[1] / w_o, size1[0] / h_o),
            extra=(up_feat2,),
        )
        flow1 = res1 + self.refinement_module_finest(x1) + up_flow2

        flow4 = scale_flow(flow4_256, w_o / coarse, h_o / coarse)
        return (flow4, logvar4_256 + log_diag), (flow3, logvar3), (flow2, logvar2), (flow1, logvar1)
