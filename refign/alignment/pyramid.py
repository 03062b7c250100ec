"""A small trainable feature pyramid with VGG-16's cut points, for CPU-scale matchers.

The faithful matcher runs a frozen ImageNet VGG-16 (``vgg.py``); no ImageNet weights exist offline and VGG-16
dominates a CPU step. This pyramid keeps the interface the UAWarpC head relies on — outputs at strides 4, 8
and 16 (VGG's pool2, pool3, pool4), selected by index — and is trained together with the head by the same
warp-consistency losses. The head's weights do not depend on feature widths (it only sees correlations), so
the same head design sits on either pyramid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STRIDES = (4, 8, 16)  # VGG-16's pool2, pool3, pool4
LEARNT_INIT_SCALE = 0.1  # initial BN scale of the learnt channels when fixed patch descriptors are present


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvPyramid(nn.Module):
    """A stride-2 stem and three stages of ``depth`` conv-BN-ReLU blocks + 2×2 max-pooling; each stage's
    output is a 1×1 conv + BN projection of it (signed, so that the head's cosine correlations spread over
    [−1, 1] and its ReLU + normalisation give a peaked cost volume).

    With ``patch_size`` k > 0 every output also carries fixed descriptors: the k×k neighbourhood of each cell
    of the image area-pooled to that stride, minus its mean, so that this part of the head's normalised
    correlation is a normalised cross-correlation, invariant to the brightness and contrast changes of night
    and fog. They make the cost volumes informative from the first step — a pyramid learnt from scratch needs
    hundreds of steps before its correlations mean anything, and until then it hides the signal — so the
    learnt projections start small (BN scale ``LEARNT_INIT_SCALE``; not 0: a correlation is bilinear in the
    two images' features, so zero on both sides would be a saddle with no gradient) and grow as training
    finds what raw patches lack.

    Args:
        widths: channels of the stem and of the stride-4, -8 and -16 outputs (four numbers).
        depth: conv blocks per stage.
        patch_size: side k of the fixed patch descriptors (0 = none); they add 3·k² channels per output.

    ``trainable`` tells the matcher that these weights are learnt with the head (so they are optimised,
    kept in train mode while training, and required in its checkpoints), unlike a frozen VGG.
    """

    trainable = True

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 96), depth: int = 2, patch_size: int = 0) -> None:
        super().__init__()
        if len(widths) != 4 or depth < 1 or patch_size < 0:
            raise ValueError(
                f"ConvPyramid needs 4 widths, depth >= 1 and patch_size >= 0, got widths={widths}, "
                f"depth={depth}, patch_size={patch_size}"
            )
        stem, *stage_widths = (int(w) for w in widths)
        self.patch_size = patch_size
        self.stem = nn.Sequential(*conv_bn_relu(3, stem, stride=2))
        stages, projections, cin = [], [], stem
        for cout in stage_widths:
            blocks = [m for i in range(depth) for m in conv_bn_relu(cin if i == 0 else cout, cout)]
            stages.append(nn.Sequential(*blocks, nn.MaxPool2d(2)))
            projection = nn.Sequential(nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))
            if patch_size:
                nn.init.constant_(projection[1].weight, LEARNT_INIT_SCALE)
            projections.append(projection)
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.projections = nn.ModuleList(projections)

    def forward(self, x: torch.Tensor, levels: Sequence[int]) -> list[torch.Tensor]:
        """Outputs at ``levels`` (indices into the stride-4/8/16 outputs, negative allowed), shallow first."""
        wanted = sorted(i % 3 for i in levels)
        outs, feat = [], self.stem(x)
        for i, stage in enumerate(self.stages[: wanted[-1] + 1]):
            feat = stage(feat)
            if i in wanted:
                out = self.projections[i](feat)
                outs.append(torch.cat([out, self.patches(x, STRIDES[i])], 1) if self.patch_size else out)
        return outs

    def patches(self, image: torch.Tensor, stride: int) -> torch.Tensor:
        """(B, 3·k², H/stride, W/stride): zero-mean k×k neighbourhoods of the image area-pooled to ``stride``."""
        k = self.patch_size
        pooled = F.avg_pool2d(image, stride)
        b, c, h, w = pooled.shape
        hood = F.unfold(pooled, k, padding=k // 2).view(b, c, k * k, h, w)
        return (hood - hood.mean(2, keepdim=True)).reshape(b, c * k * k, h, w)
