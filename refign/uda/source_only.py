"""Source-only training: supervised cross-entropy on the source domain, the lower bound of every table."""

from __future__ import annotations

import torch

from refign.uda.base import Backward, UDAMethod
from refign.uda.losses import pixel_weighted_ce
from refign.utils.imaging import resize


class SourceOnly(UDAMethod):
    """L = CE(up(student(x_src)), y_src); no target images are loaded."""

    needs_target = False
    loss_names = ("src",)

    def forward(
        self, batch: dict[str, torch.Tensor], step: int, backward: Backward
    ) -> dict[str, torch.Tensor]:
        logits = resize(self.model(batch["image_src"]), batch["semantic_src"].shape[-2:])
        backward("src", pixel_weighted_ce(logits, batch["semantic_src"]))
        return {}
