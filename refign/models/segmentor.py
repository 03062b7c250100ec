"""Encoder-decoder segmentation network with whole-image and sliding-window inference."""

from __future__ import annotations

import torch
from torch import nn

from refign.utils.imaging import resize


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
        slide_batch: windows per forward pass in sliding-window inference; None = all of them at once (the
            official ``batched_slide``). The memory of a pass grows with it: all windows of a 1080×1920
            image in one pass (HRDA*: 3 windows × (context + 9 detail crops) = 30 images of 540²) needed ~3×
            the memory of one window, more than a training step at batch 1 (docs/performance.md#eval-memory).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        inference: str = "whole",
        crop_size: tuple[int, int] = (1080, 1080),
        stride: tuple[int, int] = (420, 420),
        slide_batch: int | None = 1,
    ) -> None:
        super().__init__()
        if inference not in ("whole", "slide"):
            raise ValueError(f"model.inference must be 'whole' or 'slide', got {inference!r}")
        self.backbone = backbone
        self.head = head
        self.inference = inference
        self.crop_size = tuple(crop_size)
        self.stride = tuple(stride)
        if slide_batch is not None and slide_batch < 1:
            raise ValueError(
                f"model.slide_batch must be a positive number of windows or null, got {slide_batch}"
            )
        self.slide_batch = slide_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the head's output stride (training path)."""
        return self.head(self.backbone(x))

    def whole_inference(self, x: torch.Tensor) -> torch.Tensor:
        return resize(self(x), x.shape[-2:])

    def slide_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Average of window logits (not probabilities), as the official implementation does."""
        boxes = slide_windows(tuple(x.shape[-2:]), self.crop_size, self.stride)
        per_pass = self.slide_batch or len(boxes)
        logits = count = None
        for start in range(0, len(boxes), per_pass):
            chunk = boxes[start : start + per_pass]
            outs = self.whole_inference(torch.cat([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in chunk]))
            if logits is None:
                logits = x.new_zeros((x.shape[0], outs.shape[1], *x.shape[-2:]))
                count = x.new_zeros((1, 1, *x.shape[-2:]))
            for (y1, y2, x1, x2), out in zip(chunk, outs.split(x.shape[0]), strict=True):
                logits[:, :, y1:y2, x1:x2] += out
                count[:, :, y1:y2, x1:x2] += 1
            del outs  # before the next pass allocates its own
        return logits.div_(count)

    def predict(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Evaluation logits, bilinearly resized to ``out_size`` (the label size) when given."""
        logits = self.slide_inference(x) if self.inference == "slide" else self.whole_inference(x)
        return resize(logits, out_size) if out_size is not None else logits
