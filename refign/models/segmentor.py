"""Encoder-decoder segmentation network with whole-image and sliding-window inference."""

from __future__ import annotations

import torch
from torch import nn

from refign.imaging import resize


def slide_windows(size: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int]) -> list[tuple]:
    """Window boxes ``(y1, y2, x1, x2)`` covering an image, the last one flush with the border.

    Grid as in the official ``slide_inference``: ``n = max(L - c + s - 1, 0) // s + 1`` windows per axis,
    start ``i * s`` clipped so that the window ends inside the image.
    """
    (h, w), (ch, cw), (sh, sw) = size, crop, stride
    ny = max(h - ch + sh - 1, 0) // sh + 1
    nx = max(w - cw + sw - 1, 0) // sw + 1
    boxes = []
    for iy in range(ny):
        for ix in range(nx):
            y2, x2 = min(iy * sh + ch, h), min(ix * sw + cw, w)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            boxes.append((y1, y2, x1, x2))
    return boxes


class Segmentor(nn.Module):
    """Backbone + decode head. Attribute names (``backbone``, ``head``) match the official checkpoints.

    Args:
        backbone: returns a list of feature maps (e.g. mmseg ``MixVisionTransformer``).
        head: maps that list to logits at the head's output stride.
        inference: ``"whole"`` or ``"slide"`` (windows of ``crop_size`` every ``stride`` pixels).
        crop_size, stride: sliding-window geometry, used when ``inference == "slide"``.
        batched_slide: run all windows of an image as one batch (faster, more memory).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        inference: str = "whole",
        crop_size: tuple[int, int] = (1080, 1080),
        stride: tuple[int, int] = (420, 420),
        batched_slide: bool = True,
    ) -> None:
        super().__init__()
        if inference not in ("whole", "slide"):
            raise ValueError(f"model.inference must be 'whole' or 'slide', got {inference!r}")
        self.backbone = backbone
        self.head = head
        self.inference = inference
        self.crop_size = tuple(crop_size)
        self.stride = tuple(stride)
        self.batched_slide = batched_slide

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the head's output stride (training path)."""
        return self.head(self.backbone(x))

    def whole_inference(self, x: torch.Tensor) -> torch.Tensor:
        return resize(self(x), x.shape[-2:])

    def slide_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Average of window logits (not probabilities), as the official implementation does."""
        boxes = slide_windows(tuple(x.shape[-2:]), self.crop_size, self.stride)
        crops = [x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes]
        if self.batched_slide:
            outs = self.whole_inference(torch.cat(crops)).split(x.shape[0])
        else:
            outs = [self.whole_inference(c) for c in crops]
        logits = x.new_zeros((x.shape[0], outs[0].shape[1], *x.shape[-2:]))
        count = x.new_zeros((1, 1, *x.shape[-2:]))
        for (y1, y2, x1, x2), out in zip(boxes, outs, strict=True):
            logits[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
        return logits / count

    def predict(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Evaluation logits, bilinearly resized to ``out_size`` (the label size) when given."""
        logits = self.slide_inference(x) if self.inference == "slide" else self.whole_inference(x)
        return resize(logits, out_size) if out_size is not None else logits
