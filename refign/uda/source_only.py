"""Source-only training: supervised cross-entropy on the source domain, the lower bound of every table."""

from __future__ import annotations

import torch

from refign.imaging import resize
from refign.uda.base import UDAMethod
from refign.uda.losses import pixel_weighted_ce


class SourceOnly(UDAMethod):
    """L = CE(up(student(x_src)), y_src); no target images are loaded."""

    needs_target = False

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        logits = resize(self.model(batch["image_src"]), batch["semantic_src"].shape[-2:])
        return {"loss_src": pixel_weighted_ce(logits, batch["semantic_src"])}
