"""HRDA self-training: DAFormer's step with multi-resolution student losses (docs/self-training.md#hrda-training)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from refign.models.hrda import HRDASegmentor, check_hrda_geometry, downscale
from refign.models.segmentor import Segmentor
from refign.uda.dacs import DACS
from refign.uda.losses import pixel_weighted_ce
from refign.utils.imaging import resize


class HRDA(DACS):
    """DACS/DAFormer whose student losses combine the fused and the detail-crop predictions:
    ``(1 − w)·CE(up(fused), y) + w·CE(hr_logits, crop(y))`` with ``w = hr_loss_weight``, for the source and
    the mixed images alike; the feature distance uses the context view. The teacher (a copy of the
    ``HRDASegmentor``) pseudo-labels with the inference path, as the official code does.

    Args:
        model: an ``HRDASegmentor`` (``model=hrda``).
        hr_loss_weight: w above (0.1).
        crop_size: the training crop, checked at start-up against the output stride and the detail crop.
        **dacs: the DACS/DAFormer arguments.
    """

    segmentor_types = (HRDASegmentor,)

    def __init__(self, model: Segmentor, hr_loss_weight: float, crop_size: Sequence[int], **dacs) -> None:
        super().__init__(model, **dacs)  # checks the model type first
        crop = tuple(crop_size)
        check_hrda_geometry(crop, model.hr_crop_size or (crop[0] // 2, crop[1] // 2), model.output_stride)
        self.hr_loss_weight = hr_loss_weight

    def segmentation_loss(
        self, image: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = self.model.forward_train(image)
        y1, y2, x1, x2 = out.box
        fused = pixel_weighted_ce(resize(out.fused, label.shape[-2:]), label, weight)
        crop_weight = weight[:, y1:y2, x1:x2] if weight is not None else None
        detail = pixel_weighted_ce(out.hr_logits, label[:, y1:y2, x1:x2], crop_weight)
        return (1 - self.hr_loss_weight) * fused + self.hr_loss_weight * detail, out.lr_feats

    def imnet_input(self, image: torch.Tensor) -> torch.Tensor:
        return downscale(image)
