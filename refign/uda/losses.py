"""The official pixel-weighted cross-entropy (docs/self-training.md#pixel-weighted-ce, docs/quirks.md#q4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from refign.data.classes import IGNORE_INDEX


def pixel_weighted_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    pixel_weight: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Per-pixel CE, optionally weighted, averaged over **all** pixels (ignored ones stay in the denominator,
    as mmseg's legacy loss and the official code do)."""
    loss = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    if pixel_weight is not None:
        loss = loss * pixel_weight
    return loss.mean()
