"""HRDA multi-resolution segmentor (Hoyer et al., ECCV 2022; docs/self-training.md#hrda).

A low-resolution context view (the input downscaled ×0.5) and high-resolution detail crops share one
backbone/head pass; a scale-attention head decides per pixel and class how much the detail prediction
counts. Training uses one random detail crop aligned to the output stride; inference tiles the whole
input with detail crops (stride = half a crop) and averages their logits.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from refign.models.heads.segformer import SegFormerHead
from refign.models.segmentor import Segmentor, slide_windows
from refign.utils.imaging import resize

Box = tuple[int, int, int, int]  # y1, y2, x1, x2 in input pixels


class HRDAOutput(NamedTuple):
    fused: torch.Tensor  # (B, C, H/os, W/os)
    hr_logits: torch.Tensor  # detail-crop logits resized to the crop's pixel size
    box: Box  # the detail crop in input pixels
    lr_feats: list[torch.Tensor]  # context-view features (for the feature distance)


def random_crop_box(size: Sequence[int], crop: Sequence[int], divisible: int) -> Box:
    """A crop whose offsets are multiples of ``divisible``: ``divisible · randrange((margin + 1) // divisible)``
    per axis (python ``random``, as the official code; docs/quirks.md#q10: the last aligned offset may be unused)."""
    (h, w), (ch, cw) = size, crop
    if (h, w) == (ch, cw):
        return 0, h, 0, w
    y = random.randrange(0, (h - ch + 1) // divisible) * divisible
    x = random.randrange(0, (w - cw + 1) // divisible) * divisible
    return y, y + ch, x, x + cw


def downscale(x: torch.Tensor) -> torch.Tensor:
    """The context view: bilinear ×0.5."""
    return F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)


def upscale(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class HRDASegmentor(Segmentor):
    """``Segmentor`` with HRDA's context/detail fusion; ``forward`` is the inference path (teacher,
    evaluation), so ``whole_inference``/``slide_inference``/``predict`` work unchanged.

    Args:
        backbone, head, inference, crop_size, stride, slide_batch: as ``Segmentor``.
        num_classes: classes of the head (the attention is class-wise).
        output_stride: the head's output stride w.r.t. its input (4 for DAFormer/SegFormer heads).
        attention_channels, attention_dropout: the SegFormer scale-attention head.
        hr_crop_size: detail crop (h, w) in input pixels; None = the context view's size (official).
    """

    # ``init_weights`` from a plain segmentor leaves the scale attention at its fresh initialisation
    init_optional_prefixes = ("scale_attention.",)

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        num_classes: int,
        output_stride: int,
        attention_channels: int,
        attention_dropout: float,
        hr_crop_size: Sequence[int] | None = None,
        inference: str = "whole",
        crop_size: tuple[int, int] = (1080, 1080),
        stride: tuple[int, int] = (420, 420),
        slide_batch: int | None = 1,
    ) -> None:
        super().__init__(backbone, head, inference, crop_size, stride, slide_batch)
        self.scale_attention = SegFormerHead(
            list(backbone.out_channels), num_classes, attention_channels, attention_dropout
        )
        self.output_stride = output_stride
        self.hr_crop_size = tuple(hr_crop_size) if hr_crop_size is not None else None
        self._check_strides()

    def _check_strides(self) -> None:
        """Fail at start-up when head and scale attention do not predict at ``output_stride``."""
        size = 32 * self.output_stride
        was_training = self.training
        self.eval()
        with torch.no_grad():
            feats = self.backbone(torch.zeros(1, 3, size, size))
            head_size = self.head(feats).shape[-1]
            att_size = self.scale_attention(feats).shape[-1]
        self.train(was_training)
        expected = size // self.output_stride
        if head_size != expected or att_size != expected:
            raise ValueError(
                f"HRDA fuses at output stride {self.output_stride}, but the head predicts at stride "
                f"{size // head_size} and the scale attention at {size // att_size}: this head cannot be "
                f"combined with HRDA scale attention (use head=daformer, or set model.output_stride)"
            )

    def detail_crop(self, size: Sequence[int], training: bool) -> tuple[int, int]:
        """Detail crop size for an input of ``size``; raises when it cannot be aligned or does not fit."""
        crop = self.hr_crop_size or (size[0] // 2, size[1] // 2)
        check_hrda_geometry(size, crop, self.output_stride, training)
        return crop

    def _both_views(
        self, x: torch.Tensor, boxes: list[Box]
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """One backbone/head pass over [context; detail crops] → (lr_feats, attention, lr_seg, hr_segs)."""
        lr_x = downscale(x)
        hr_x = torch.cat([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes])
        feats = self.backbone(torch.cat([lr_x, hr_x]))
        b = x.shape[0]
        lr_feats = [f[:b] for f in feats]
        seg = self.head(feats)
        att = torch.sigmoid(self.scale_attention(lr_feats))
        return lr_feats, att, seg[:b], seg[b:]

    def forward_train(self, x: torch.Tensor, box: Box | None = None) -> HRDAOutput:
        """Training path: one detail crop for the whole batch (random, stride-aligned, unless given)."""
        os = self.output_stride
        crop = self.detail_crop(x.shape[-2:], training=True)
        box = box or random_crop_box(x.shape[-2:], crop, 2 * os)
        lr_feats, att, lr_seg, hr_seg = self._both_views(x, [box])
        y1, y2, x1, x2 = box
        mask = torch.zeros_like(att[:, :1])
        mask[:, :, y1 // (2 * os) : y2 // (2 * os), x1 // (2 * os) : x2 // (2 * os)] = 1
        att = att * mask  # detail only where the crop is
        up_lr = upscale((1 - att) * lr_seg)
        hr = torch.zeros_like(up_lr)
        hr[:, :, y1 // os : y2 // os, x1 // os : x2 // os] = hr_seg
        fused = upscale(att) * hr + up_lr
        return HRDAOutput(fused, resize(hr_seg, (y2 - y1, x2 - x1)), box, lr_feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inference path: detail crops tile the input (stride = half a crop), their logits averaged."""
        os = self.output_stride
        crop = self.detail_crop(x.shape[-2:], training=False)
        boxes = slide_windows(tuple(x.shape[-2:]), crop, (crop[0] // 2, crop[1] // 2))
        _, att, lr_seg, hr_segs = self._both_views(x, boxes)
        up_lr = upscale((1 - att) * lr_seg)
        hr = torch.zeros_like(up_lr)
        count = torch.zeros_like(up_lr[:, :1])
        for (y1, _, x1, _), seg in zip(boxes, hr_segs.split(x.shape[0]), strict=True):
            h, w = seg.shape[-2:]
            hr[:, :, y1 // os : y1 // os + h, x1 // os : x1 // os + w] += seg
            count[:, :, y1 // os : y1 // os + h, x1 // os : x1 // os + w] += 1
        return upscale(att) * (hr / count) + up_lr


def check_hrda_geometry(
    size: Sequence[int], crop: Sequence[int], output_stride: int, training: bool = True
) -> None:
    """The context view and the detail crop must map onto whole cells of the fused output.

    The input must be divisible by 2·os (the context view is half of it and predicts at os); a training
    detail crop too, since the attention mask lives on the context grid; an inference crop only by os
    (the official 1080² windows use 540² crops at offsets 0/270/540, i.e. cells 0/67/135 at os 4).
    """
    align = 2 * output_stride
    if any(s % align for s in size):
        raise ValueError(
            f"HRDA: crop size {tuple(size)} is not divisible by 2 × output stride = {align} "
            f"(the context view is half the crop and predicts at output stride {output_stride})"
        )
    crop_align = align if training else output_stride
    if any(c % crop_align for c in crop):
        raise ValueError(f"HRDA: detail crop {tuple(crop)} is not divisible by {crop_align}")
    if crop[0] > size[0] or crop[1] > size[1]:
        raise ValueError(f"HRDA: detail crop {tuple(crop)} is larger than the image {tuple(size)}")
