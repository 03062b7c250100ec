"""Confusion-matrix mIoU accumulated over a whole dataset (not averaged per image), as the official IoU."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from refign.engine.dist import all_reduce_sum


class ConfusionMatrix:
    """Rows = ground truth, columns = prediction; pixels labelled ``ignore_index`` are skipped."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred`` and ``target``: integer label maps of the same shape."""
        keep = target != self.ignore_index
        idx = target[keep].long().cpu() * self.num_classes + pred[keep].long().cpu()
        self.mat += torch.bincount(idx, minlength=self.num_classes**2).reshape_as(self.mat)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum over ranks so that every rank reports the whole dataset."""
        self.mat = all_reduce_sum(self.mat)
        return self

    def iou(self) -> torch.Tensor:
        """Per-class IoU; a class with an empty union scores 0, as torchmetrics' ``absent_score`` default."""
        tp = self.mat.diag().double()
        union = self.mat.sum(0).double() + self.mat.sum(1).double() - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.zeros_like(tp))

    def miou(self, over_present_classes: bool = False) -> float:
        """Mean IoU; ``over_present_classes`` averages only classes with ground-truth pixels (RobotCar)."""
        iou = self.iou()
        if over_present_classes:
            iou = iou[self.mat.sum(1) > 0]
        return float(iou.mean()) if len(iou) else 0.0

    def table(self, class_names: Sequence[str]) -> dict[str, float]:
        return {name: round(100 * float(v), 2) for name, v in zip(class_names, self.iou(), strict=True)}
