"""Evaluation of a segmentor: mIoU overall and per condition, each rank on its own shard, and the callable
the trainer runs over every validation set (the trainer itself knows no task)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from refign.data.classes import CLASS_NAMES, IGNORE_INDEX
from refign.engine.dist import DistInfo
from refign.engine.metrics import ConfusionMatrix
from refign.utils.progress import progress_bar


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    dist_info: DistInfo,
    num_classes: int,
    batch_size: int = 1,
    num_workers: int = 0,
    over_present_classes: bool = False,
    desc: str = "eval",
    autocast: Callable = contextlib.nullcontext,
) -> dict:
    """mIoU (in %) and the per-class IoU table, overall and per ``condition`` when samples carry one.
    ``model.predict(image, out_size)`` gives logits at the label size (whole or sliding-window inference)."""
    shard = Subset(dataset, range(dist_info.rank, len(dataset), dist_info.world_size))
    # Workers from a fork server, not forked from this process: forked from a trainer holding gigabytes, they
    # would keep its pages alive, and every page the evaluation's forward passes then rewrite would be
    # copied — the memory grew image after image (docs/performance.md#eval-memory).
    context = "forkserver" if num_workers > 0 else None
    loader = DataLoader(
        shard, batch_size=batch_size, num_workers=num_workers, multiprocessing_context=context
    )
    was_training = model.training
    model.eval()
    overall = ConfusionMatrix(num_classes, IGNORE_INDEX)
    # Every rank must reduce the same matrices, so the condition names come from the dataset, not the shard.
    conditions = [c for c in getattr(dataset, "conditions", ()) if c]
    per_condition = {c: ConfusionMatrix(num_classes, IGNORE_INDEX) for c in conditions}
    for batch in progress_bar(loader, desc=desc, leave=False, disable=not dist_info.is_main):
        image = batch["image"].to(dist_info.device, non_blocking=True)
        label = batch["semantic"].to(dist_info.device)
        with autocast():
            logits = model.predict(image, out_size=label.shape[-2:])
        pred = logits.argmax(1)
        del logits  # not alive during the next image's forward pass
        overall.update(pred, label)
        for i, cond in enumerate(batch.get("condition", [])):
            if cond in per_condition:
                per_condition[cond].update(pred[i], label[i])
    model.train(was_training)
    # the Cityscapes names for the 19-class benchmarks, class indices otherwise
    names = list(CLASS_NAMES) if num_classes == len(CLASS_NAMES) else [str(c) for c in range(num_classes)]
    result = {
        "mIoU": round(100 * overall.all_reduce().miou(over_present_classes), 2),
        "per_class": overall.table(names),
    }
    if len(per_condition) > 1:
        result["per_condition"] = {
            c: round(100 * m.all_reduce().miou(over_present_classes), 2) for c, m in per_condition.items()
        }
    return result


def segmentation_eval(
    val_sets: dict[str, Dataset],
    dist_info: DistInfo,
    num_classes: int,
    batch_size: int = 1,
    num_workers: int = 0,
    over_present_classes: bool = False,
) -> Callable[[nn.Module, Callable], tuple[dict, dict[str, float]]]:
    """The trainer's evaluation for segmentation: ``(model, autocast) -> (results by set, logged scalars)``,
    the scalars being ``val/<set>/mIoU`` and ``val/<set>/<condition>``."""

    def run(model: nn.Module, autocast: Callable = contextlib.nullcontext) -> tuple[dict, dict[str, float]]:
        settings = (dist_info, num_classes, batch_size, num_workers, over_present_classes)
        results = {
            name: evaluate(model, ds, *settings, desc=f"eval {name}", autocast=autocast)
            for name, ds in val_sets.items()
        }
        flat = {f"val/{name}/mIoU": r["mIoU"] for name, r in results.items()}
        for name, r in results.items():
            flat.update({f"val/{name}/{c}": v for c, v in r.get("per_condition", {}).items()})
        return results, flat

    return run
