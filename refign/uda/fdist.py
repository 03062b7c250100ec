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
    lbl = label.clone()
    lbl[lbl == ignore_index] = num_classes  # the ignore label competes as an extra class
    onehot = F.one_hot(lbl, num_classes + 1).permute(0, 3, 1, 2).float()
    ratio, cls = F.avg_pool2d(onehot, scale, scale).max(dim=1)
    cls[(cls == num_classes) | (ratio < min_ratio)] = ignore_index
    return cls


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
) -> tuple[torch.Tensor, bool]:
    """Mean over masked positions of ‖f_S − f_I‖₂ across channels; ``(0, False)`` when no cell qualifies.

    The official code returns NaN in that case (docs/quirks.md#q6); here it is 0 and counted (docs/deviations.md#d2), so the
    returned flag says whether the distance was defined.
    """
    dist = torch.norm(student - frozen.detach(), dim=1)
    if mask is not None:
        dist = dist[mask]
    if dist.numel() == 0:
        return student.sum() * 0.0 + 0.0, False  # +0.0: no negative zero in the logs
    return dist.mean(), True
