"""The matcher as one module: frozen VGG-16 + UAWarpC head → dense flow and certainty (docs/uawarpc.md#network-outputs).

Attribute names ``alignment_backbone`` / ``alignment_head`` are those of the official checkpoints, so
``state_dict()`` of this module has the layout of ``uawarpc_megadepth.ckpt``.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from refign.alignment.uawarpc import COARSE, Level, UAWarpCHead
from refign.alignment.vgg import VGGPyramid
from refign.models.weights import load_strict, read_state_dict

HEAD_PREFIX, BACKBONE_PREFIX = "alignment_head.", "alignment_backbone."
Pyramids = tuple[list[torch.Tensor], list[torch.Tensor]]  # (full-res [pool2, pool3], coarse [pool3, pool4])


def certainty_from_logvar(logvar: torch.Tensor, radius: float = 1.0) -> torch.Tensor:
    """P(|error| < radius) under an isotropic 2-D Gaussian with variance exp(logvar): 1 − exp(−R²/2σ²)."""
    return -torch.expm1(-0.5 * radius**2 * torch.exp(-logvar))


class AlignmentNetwork(nn.Module):
    """Dense matcher: ``forward(image_trg, image_src) -> (flow, certainty)`` at the input resolution.

    ``flow`` (B, 2, H, W) in pixels, target → source (channel 0 = x): target pixel p matches source
    location p + flow(p), so ``warp(source_thing, flow)`` aligns it to the target. ``certainty`` (B, 1, H, W)
    in [0, 1] is P_R with R = 1 px (what Refign uses; the official ``AlignmentModel.forward`` returns 1 − P_R).
    Inputs are ImageNet-normalised RGB of the *same* size; different sizes raise ``ValueError`` (pad or
    resize the pair to a common size first, as the official evaluation does with bottom-right padding).

    Args:
        backbone: the feature pyramid: the frozen VGG-16 (official; kept frozen and in eval mode) or a
            pyramid with ``trainable = True`` (``PatchPyramid``), which is learnt together with the head.
        head: the UAWarpC head.
        certainty_radius: R of P_R in pixels.
    """

    def __init__(self, backbone: nn.Module, head: UAWarpCHead, certainty_radius: float = 1.0) -> None:
        super().__init__()
        self.backbone_trainable = bool(getattr(backbone, "trainable", False))
        self.alignment_backbone = backbone.requires_grad_(self.backbone_trainable)
        self.alignment_head = head
        self.certainty_radius = certainty_radius

    def train(self, mode: bool = True) -> AlignmentNetwork:
        super().train(mode)
        if not self.backbone_trainable:
            self.alignment_backbone.eval()
        return self

    def pyramids(self, images: torch.Tensor) -> Pyramids:
        """Features of a batch: full resolution (pool2, pool3) and coarse² (pool3, pool4); without gradient
        unless the pyramid is trained with the head."""
        coarse = self.alignment_head.coarse_size
        small = F.interpolate(images, size=(coarse, coarse), mode="area")
        with torch.set_grad_enabled(self.backbone_trainable and torch.is_grad_enabled()):
            return self.alignment_backbone(images, [-3, -2]), self.alignment_backbone(small, [-2, -1])

    def head_levels(self, pyr_trg: Pyramids, pyr_src: Pyramids, size: tuple[int, int]) -> tuple[Level, ...]:
        """All four (flow, log-variance) levels, coarse → fine (used by training and the losses)."""
        return self.alignment_head(pyr_trg[0], pyr_src[0], pyr_trg[1], pyr_src[1], size)

    def forward(self, image_trg: torch.Tensor, image_src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image_trg.shape != image_src.shape:
            raise ValueError(
                f"AlignmentNetwork needs a target and source of the same shape, got "
                f"{tuple(image_trg.shape)} and {tuple(image_src.shape)}; pad or resize the pair first"
            )
        b, _, h, w = image_trg.shape
        full, small = self.pyramids(torch.cat([image_src, image_trg]))
        pyr_src = ([f[:b] for f in full], [f[:b] for f in small])
        pyr_trg = ([f[b:] for f in full], [f[b:] for f in small])
        flow, logvar = self.head_levels(pyr_trg, pyr_src, (h, w))[-1]
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        logvar = F.interpolate(logvar, size=(h, w), mode="bilinear", align_corners=False)
        return flow, certainty_from_logvar(logvar, self.certainty_radius)


def build_alignment_network(
    vgg_weights: str | None = None,
    checkpoint: str | None = None,
    iterative_refinement: bool = False,
    force_torch_correlation: bool = False,
    certainty_radius: float = 1.0,
    coarse_size: int = COARSE,
    head_width: float = 1.0,
    pyramid: nn.Module | None = None,
) -> AlignmentNetwork:
    """The matcher from config values: ImageNet VGG file and/or a full matcher checkpoint (both optional).

    ``pyramid`` replaces the official VGG-16 (e.g. a ``PatchPyramid`` for CPU-scale matchers; ``vgg_weights``
    must then be null), ``coarse_size`` the official 256² coarse branch and ``head_width`` scales the head's
    channels (1.0 = official).
    """
    if pyramid is not None and vgg_weights:
        raise ValueError(
            "alignment.vgg_weights is set but alignment.pyramid replaces VGG-16: set one of them"
        )
    head = UAWarpCHead(iterative_refinement, force_torch_correlation, coarse_size, head_width)
    backbone = pyramid if pyramid is not None else VGGPyramid(vgg_weights)
    network = AlignmentNetwork(backbone, head, certainty_radius)
    if checkpoint:
        load_alignment_checkpoint(checkpoint, network)
    return network


def load_alignment_checkpoint(path: str | os.PathLike, network: AlignmentNetwork) -> None:
    """Load ``alignment_head.*`` (strictly) and, when present, ``alignment_backbone.*`` from a checkpoint.

    Accepts the released ``uawarpc_megadepth.ckpt`` (Lightning: tensors under ``state_dict``), a Refign
    segmentation checkpoint (other prefixes are ignored), this project's own matcher checkpoints, or a bare
    state dict. Raises ``CheckpointError`` listing every missing / unexpected / mis-shaped head key.
    """
    state = read_state_dict(path)
    _load_prefixed(network.alignment_head, state, HEAD_PREFIX, path, required=True)
    # a trained pyramid is part of the matcher; a frozen VGG may come from its own ImageNet file instead
    required = network.backbone_trainable
    _load_prefixed(network.alignment_backbone, state, BACKBONE_PREFIX, path, required=required)


def _load_prefixed(
    module: nn.Module, state: dict, prefix: str, path: str | os.PathLike, required: bool
) -> None:
    sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub and not required:
        return
    load_strict(module, sub, str(path), prefix)
