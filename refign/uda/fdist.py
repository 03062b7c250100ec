"""ImageNet feature distance on "thing" classes (DAFormer; docs/self-training.md#feature-distance)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from refign.data.classes import IGNORE_INDEX


def downscale_label_ratio(
    label: torch.Tensor, scale: int, min_ratio: float, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Label of each ``scale``×``scale`` cell: its majority class, or ``ignore_index`` when the majority is the
    ignore label or covers less than ``min_ratio`` of the cell.

    ``label`` is (B, H, W) with H and W multiples of ``scale``; the result is (B, H/scale, W/scale).
    """
    lbl = torch.where(label == ignore_index, num_classes, label)  # the ignore label competes as a class
    onehot = F.one_hot(lbl, num_classes + 1).permute(0, 3, 1, 2).float()
    ratio, cls = F.avg_pool2d(onehot, scale, scale).max(dim=1)
    return torch.where((cls == num_classes) | (ratio < min_ratio), ignore_index, cls)


def feature_distance_mask(
    label: torch.Tensor,
    feat_size: Sequence[int],
    classes: Sequence[int],
    min_ratio: float,
    num_classes: int,
) -> torch.Tensor:
    """(B, h, w) bool: feature cells whose downscaled label is one of ``classes``.

    The scale is the integer ratio of label width to feature width, as in the official code.
    """
    scale = label.shape[-1] // feat_size[-1]
    cells = downscale_label_ratio(label, scale, min_ratio, num_classes)
    return torch.isin(cells, torch.as_tensor(list(classes), device=label.device))


def feature_distance(
    student: torch.Tensor, frozen: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over masked positions of ‖f_S − f_I‖₂ across channels, and a bool tensor that says whether any
    position qualified (the distance is 0 when none did).

    The official code selects the masked cells (``dist[mask]``) and returns NaN when there are none
    (docs/quirks.md#q6); here it is 0 and counted (docs/deviations.md#d2). The mean is taken as the sum over
    the mask divided by its count: the same value up to the order of summation, with gradients identical
    bit for bit, and shapes that do not depend on the labels, so the step neither waits for the device to
    count the cells nor stops a fake-tensor trace (``refign.estimate``).
    """
    dist = torch.norm(student - frozen.detach(), dim=1)
    if mask is None:
        return dist.mean(), torch.ones((), dtype=torch.bool, device=dist.device)
    count = mask.sum()
    # +0.0 where nothing qualifies: the masked sum is then +0, divided by 1
    return (dist * mask).sum() / count.clamp(min=1), count > 0
