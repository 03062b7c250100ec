"""Evaluation of a segmentor on one dataset: mIoU overall and per condition, each rank on its own shard."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from refign.data.classes import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from refign.engine.dist import DistInfo
from refign.engine.metrics import ConfusionMatrix


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    dist_info: DistInfo,
    batch_size: int = 1,
    num_workers: int = 0,
    over_present_classes: bool = False,
    desc: str = "eval",
    autocast: Callable = contextlib.nullcontext,
) -> dict:
    """mIoU (in %) and the per-class IoU table, overall and per ``condition`` when samples carry one.

    ``model.predict(image, out_size)`` gives logits at the label size (whole or sliding-window inference).
    """
    shard = Subset(dataset, range(dist_info.rank, len(dataset), dist_info.world_size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=num_workers)
    was_training = model.training
    model.eval()
    overall = ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX)
    # Every rank must reduce the same matrices, so the condition names come from the dataset, not the shard.
    conditions = [c for c in getattr(dataset, "conditions", ()) if c]
    per_condition = {c: ConfusionMatrix(NUM_CLASSES, IGNORE_INDEX) for c in conditions}
    for batch in tqdm(loader, desc=desc, leave=False, disable=not dist_info.is_main):
        image = batch["image"].to(dist_info.device, non_blocking=True)
        label = batch["semantic"].to(dist_info.device)
        with autocast():
            logits = model.predict(image, out_size=label.shape[-2:])
        pred = logits.argmax(1)
        overall.update(pred, label)
        for i, cond in enumerate(batch.get("condition", [])):
            if cond in per_condition:
                per_condition[cond].update(pred[i], label[i])
    model.train(was_training)
    result = {
        "mIoU": round(100 * overall.all_reduce().miou(over_present_classes), 2),
        "per_class": overall.table(CLASS_NAMES),
    }
    if len(per_condition) > 1:
        result["per_condition"] = {
            c: round(100 * m.all_reduce().miou(over_present_classes), 2) for c, m in per_condition.items()
        }
    return result
