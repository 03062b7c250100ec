"""Teacher pseudo-labels on the target and their confidence weight (docs/self-training.md#pseudo-labels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from refign.utils.imaging import resize


@dataclass
class PseudoLabels:
    """What a pseudo-labeler hands back for one step; the method takes the hard labels and their weights
    from ``probs`` (``confidence_weight``: argmax, and the confident fraction of the maxima)."""

    images: torch.Tensor  # the target images of the step (Refign may swap in the references)
    probs: torch.Tensor  # (B, C, H, W) class probabilities on them
    stats: dict[str, float] = field(default_factory=dict)  # scalars for the training log
    panel: np.ndarray | None = None  # (H, W, 3) uint8 picture, only when the caller asked for one


class PseudoLabeler(Protocol):
    """Produces the target images of a step and the teacher's class probabilities on them.

    The default is the teacher's softmax on ``image_trg``; Refign plugs in here (alignment of the reference
    prediction and refinement, plus the 50 % adapt-to-reference choice of the images). ``want_panel`` asks
    for a picture of what it did (the engine's image cadence); a labeler without one returns none.
    """

    def __call__(
        self, teacher: nn.Module, batch: dict[str, torch.Tensor], want_panel: bool = False
    ) -> PseudoLabels: ...


def teacher_probs(teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``softmax(up(teacher(images)))`` in fp32: class probabilities at the input resolution."""
    return torch.softmax(resize(teacher(images), images.shape[-2:]).float(), dim=1)


class TeacherSoftmax(nn.Module):
    """``softmax(up(teacher(image_trg)))``: the plain DACS pseudo-labeler."""

    def forward(
        self, teacher: nn.Module, batch: dict[str, torch.Tensor], want_panel: bool = False
    ) -> PseudoLabels:
        images = batch["image_trg"]
        return PseudoLabels(images, teacher_probs(teacher, images))


def confidence_weight(
    probs: torch.Tensor, threshold: float, ignore_top: int = 0, ignore_bottom: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels and their pixel weights.

    The weight is one scalar for the whole batch, the fraction of pixels whose max probability is at least
    ``threshold`` (docs/quirks.md#q5), broadcast to a (B, H, W) map whose first ``ignore_top`` and last
    ``ignore_bottom`` rows are zeroed.
    """
    confidence, label = probs.max(dim=1)
    q = (confidence >= threshold).float().mean()
    weight = q * torch.ones_like(confidence)
    if ignore_top > 0:
        weight[:, :ignore_top] = 0
    if ignore_bottom > 0:
        weight[:, -ignore_bottom:] = 0
    return label, weight
