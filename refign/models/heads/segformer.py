"""SegFormer's all-MLP decode head, used by HRDA as its scale-attention network (docs/self-training.md#segformer-head).

Module names follow the official checkpoints (``linear_c1.proj`` … ``linear_c4.proj``, ``linear_fuse.conv``,
``linear_fuse.bn``, ``linear_pred``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import ConvModule
from torch import nn

from refign.models.heads.daformer import TokenMLP, classifier
from refign.utils.imaging import resize


class SegFormerHead(nn.Module):
    """Embed the four levels, resize to the finest, concatenate (coarsest first), fuse, classify.

    Args:
        in_channels: channels of the four backbone levels (finest first).
        num_classes: output channels.
        channels: embedding width.
        dropout_ratio: ``Dropout2d`` before the classifier.
        norm_cfg: mmcv norm config of the fuse layer.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int,
        dropout_ratio: float,
        norm_cfg: dict | None = None,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"SegFormerHead needs 4 feature levels, the backbone gives {len(in_channels)}")
        for i, c in enumerate(in_channels, start=1):
            setattr(self, f"linear_c{i}", TokenMLP(c, channels))
        self.linear_fuse = ConvModule(
            4 * channels, channels, 1, norm_cfg=dict(norm_cfg or {"type": "BN"}), act_cfg={"type": "ReLU"}
        )
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.linear_pred = classifier(channels, num_classes)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        embedded = [resize(getattr(self, f"linear_c{i}")(feats[i - 1]), size) for i in (4, 3, 2, 1)]
        return self.linear_pred(self.dropout(self.linear_fuse(torch.cat(embedded, dim=1))))
