"""A feature pyramid with VGG-16's cut points that a CPU can afford: learnt projections of fixed patches.

The faithful matcher runs a frozen ImageNet VGG-16 (``vgg.py``); no ImageNet weights exist offline, VGG-16
dominates a CPU step, and a convolutional pyramid learnt from scratch with the head does not converge in a CPU
budget (measured on the synthetic benchmark: PCK-5 still at the identity's level after 300 warp-consistency
steps — until its features mean something its correlations carry no signal for the head to learn from). This
pyramid keeps the interface the UAWarpC head relies on — outputs at strides 4, 8 and 16 (VGG's pool2, pool3,
pool4), selected by index — with descriptors that are informative from the first step:

* the k×k neighbourhood of every cell of the image area-pooled to the output's stride, minus its mean, so the
  head's normalised correlation of two descriptors is a normalised cross-correlation of the patches,
  invariant to the brightness and contrast changes of night and fog;
* a learnt 1×1 projection per stride, trained with the head by the same warp-consistency losses and started
  at the identity, so training re-weights the patch values (e.g. luminance structure over colour) without
  first destroying the signal.

The head's weights do not depend on the pyramid's widths (it only sees correlations), so the same head design
sits on either pyramid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STRIDES = (4, 8, 16)  # VGG-16's pool2, pool3, pool4


class PatchPyramid(nn.Module):
    """Zero-mean k×k neighbourhoods of the image pooled to strides 4, 8, 16, each with a learnt projection.

    Args:
        patch_size: k (odd); every output has 3·k² channels.
        learn_projection: train a 1×1 projection (identity at start) per stride; False keeps them fixed.

    ``trainable`` tells the matcher that these weights are learnt with the head (optimised, and required in
    its checkpoints), unlike a frozen VGG.
    """

    def __init__(self, patch_size: int = 3, learn_projection: bool = True) -> None:
        super().__init__()
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"PatchPyramid patch_size must be a positive odd number, got {patch_size}")
        self.patch_size = patch_size
        channels = 3 * patch_size**2
        self.projections = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False) for _ in STRIDES)
        for projection in self.projections:
            nn.init.eye_(projection.weight[:, :, 0, 0])
        self.trainable = learn_projection
        self.requires_grad_(learn_projection)

    def forward(self, x: torch.Tensor, levels: Sequence[int]) -> list[torch.Tensor]:
        """Outputs at ``levels`` (indices into the stride-4/8/16 outputs, negative allowed), shallow first."""
        return [self.projections[i](self.patches(x, STRIDES[i])) for i in sorted(i % 3 for i in levels)]

    def patches(self, image: torch.Tensor, stride: int) -> torch.Tensor:
        """(B, 3·k², H/stride, W/stride): zero-mean k×k neighbourhoods of the image area-pooled to ``stride``."""
        k = self.patch_size
        pooled = F.avg_pool2d(image, stride)
        b, c, h, w = pooled.shape
        hood = F.unfold(pooled, k, padding=k // 2).view(b, c, k * k, h, w)
        return (hood - hood.mean(2, keepdim=True)).reshape(b, c * k * k, h, w)
