"""DeepLabV2 classifier (docs/self-training.md#deeplabv2-head): parallel dilated 3×3 convolutions whose outputs are summed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DeepLabV2Head(nn.Module):
    """ASPP-style classifier on one backbone level (``conv2d_list.{i}`` as in the official checkpoints).

    Args:
        in_channels: channels of every backbone level; the head reads level ``in_index``.
        num_classes: output classes.
        in_index: which level (3 = ResNet ``layer4``, 2048 channels, output stride 8 with dilations).
        dilations: one 3×3 branch per dilation (padding = dilation).
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, in_index: int, dilations: Sequence[int]
    ) -> None:
        super().__init__()
        self.in_index = in_index
        self.conv2d_list = nn.ModuleList(
            [nn.Conv2d(in_channels[in_index], num_classes, 3, padding=d, dilation=d) for d in dilations]
        )
        for conv in self.conv2d_list:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = feats[self.in_index]
        return sum(conv(x) for conv in self.conv2d_list)
