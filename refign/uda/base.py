"""The interface between the method-agnostic engine and a domain-adaptation method."""

from __future__ import annotations

import torch
from torch import nn

from refign.models.segmentor import Segmentor


class UDAMethod(nn.Module):
    """A training algorithm wrapped around a segmentation model.

    The engine calls ``method(batch, step)`` once per optimiser step (through DDP when distributed) and
    back-propagates the sum of the returned ``loss_*`` entries; every other entry is only logged. A method
    therefore never calls ``backward``, touches the optimiser, AMP, DDP or checkpoint files.

    Batch keys (tensors already on the right device): ``image_src`` (B,3,H,W) normalised, ``semantic_src``
    (B,H,W) int64 train ids with 255 = ignore, and for adaptation methods ``image_trg`` (B,3,H,W) plus
    ``image_ref`` (B,3,H,W) where the target dataset has reference images.

    When the engine sets ``wants_images`` before a step, the method may add ``img/<name>`` entries: (H, W, 3)
    uint8 panels that are saved as PNG and sent to wandb.
    """

    wants_images: bool = False

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One training step: returns ``loss_*`` tensors (summed for backward) and logged scalars."""
        raise NotImplementedError

    def inference_model(self) -> Segmentor:
        """The network that is evaluated and exported (the student, as in the official code)."""
        return self.model
