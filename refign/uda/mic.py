"""Masked Image Consistency (MIC; Hoyer et al., CVPR 2023) as an extra loss of any self-training method.

The student sees a target image with most of its square blocks blanked out and must still predict the
teacher's pseudo-label of the *whole* image, so it learns to infer a region from its context. As in the
official configurations (``mask_alpha='same'``, ``mask_pseudo_threshold='same'``), MIC has no teacher of its
own: it reuses the host method's pseudo-labels and pixel weights, made by the EMA teacher on the unmasked
target image (with ``refign=on`` those are Refign's refined labels), and trains the student through the
method's own ``segmentation_loss`` (HRDA's multi-resolution loss included). Facts from the official
``masking_consistency_module.py``, ``masking_transforms.py`` and the ``dacs.py`` call site (lhoyer/MIC).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from refign.uda.augment import color_jitter, dacs_blur, random_order
from refign.utils.imaging import denormalize, normalize

# What is masked (official ``mask_mode``): ``target`` = the target images (``separatetrg[aug]``, MIC's own
# default, e.g. GTA → Cityscapes); ``source_and_target`` = the first source image with its label and the first
# target image with its pseudo-label (``separate[aug]``, the official Cityscapes → ACDC / Dark Zurich runs).
IMAGES = ("target", "source_and_target")


def block_mask(
    shape: Sequence[int], block_size: int, ratio: float, device: torch.device | None = None
) -> torch.Tensor:
    """A (B, 1, H, W) float mask, 1 = kept, 0 = masked, from ``shape`` = (B, …, H, W).

    One U(0, 1) draw per block and image; a block is kept when its draw exceeds ``ratio`` (official), so on
    average a fraction ``ratio`` of the blocks is masked, independently per image. The official code
    upsamples the block grid with nearest interpolation; for block sizes that divide H and W (required
    here) that is the repetition below.
    """
    b, (h, w) = shape[0], shape[-2:]
    if h % block_size or w % block_size:
        raise ValueError(f"MIC block size {block_size} does not divide the image size {h}×{w}")
    keep = (torch.rand(b, 1, h // block_size, w // block_size, device=device) > ratio).float()
    return keep.repeat_interleave(block_size, -2).repeat_interleave(block_size, -1)


def batch_photometric(
    images: torch.Tensor,
    jitter_s: float,
    jitter_p: float,
    sigma_range: Sequence[float],
) -> torch.Tensor:
    """DACS's strong colour augmentation applied to the batch *in one call*, as MIC does (``strong_transform``
    on the whole masked batch): jitter with probability 1 − ``jitter_p`` (per-image factors, one order for
    the batch), then blur with probability 0.5 (one σ for the batch). Unlike DACS's mixed images, the blur is
    not gated by the method's ``blur`` switch (official). ``images`` are ImageNet-normalised.
    """
    jitter_draw, blur_draw = random.uniform(0, 1), random.uniform(0, 1)
    if jitter_draw > jitter_p:
        order = random_order()
        images = torch.cat([normalize(color_jitter(denormalize(x[None]), jitter_s, order)) for x in images])
    if blur_draw > 0.5:
        images = dacs_blur(images, float(np.random.uniform(*sigma_range)))
    return images


class MaskedBatch(NamedTuple):
    image: torch.Tensor  # what the student sees: augmented, masked (B', 3, H, W)
    label: torch.Tensor  # the labels its loss uses (B', H, W)
    weight: torch.Tensor  # their pixel weights (B', H, W)
    mask: torch.Tensor  # (B', 1, H, W), 1 = kept
    target_index: int  # the row of the (first) target image, for the panel


class MaskedImageConsistency:
    """Makes MIC's masked batch; the host method computes the loss with its own segmentation loss and
    weighs it by ``loss_weight`` (``mic=on``, selected by ``build.build_mic``).

    Args:
        block_size: side of the square mask blocks in input pixels (official 64 on 1024² crops; 32 for
            DAFormer's 512² crops); must divide ``crop_size``.
        ratio: fraction of blocks masked (official 0.7).
        loss_weight: λ of the MIC loss (official ``mask_lambda`` = 1 in every configuration; it multiplies the
            method's whole segmentation loss, where the official code, for λ ≠ 1, scales only HRDA's fused
            term).
        images: ``target`` or ``source_and_target`` (see ``IMAGES``).
        augment: colour jitter + blur before masking (official ``*aug`` modes).
        color_jitter_s, color_jitter_p, blur_sigma: the augmentation's strength, skip probability and σ range
            (official: the host method's values).
        crop_size: the training crop, checked against ``block_size`` at start-up.
    """

    def __init__(
        self,
        block_size: int,
        ratio: float,
        loss_weight: float,
        images: str,
        augment: bool,
        color_jitter_s: float,
        color_jitter_p: float,
        blur_sigma: Sequence[float],
        crop_size: Sequence[int],
    ) -> None:
        if images not in IMAGES:
            raise ValueError(f"mic.images={images!r}: choose one of {', '.join(IMAGES)}")
        if block_size <= 0 or any(side % block_size for side in crop_size):
            raise ValueError(
                f"mic.block_size={block_size} does not divide the training crop dataset.crop_size="
                f"{list(crop_size)}: choose a block size that divides both sides"
            )
        if not 0 <= ratio < 1:
            raise ValueError(f"mic.ratio={ratio} must be in [0, 1)")
        self.block_size, self.ratio, self.loss_weight = block_size, ratio, loss_weight
        self.images, self.augment = images, augment
        self.jitter_s, self.jitter_p = color_jitter_s, color_jitter_p
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))

    @torch.no_grad()
    def masked_batch(
        self,
        target: torch.Tensor,
        pseudo_label: torch.Tensor,
        pseudo_weight: torch.Tensor,
        source: torch.Tensor,
        source_label: torch.Tensor,
    ) -> MaskedBatch:
        """The images the student is trained on, their labels and weights.

        ``target`` are the pseudo-labelled target images (unmasked, un-augmented: the teacher labelled them
        as they are), ``pseudo_label``/``pseudo_weight`` the method's labels and weights on them; ``source``
        and ``source_label`` are only read with ``images=source_and_target`` (weight 1 on the source).
        """
        if self.images == "target":
            image, label, weight, target_index = target, pseudo_label, pseudo_weight, 0
        else:  # official: one source and one target image (it asserts a batch of 2 and takes the first)
            image = torch.stack([source[0], target[0]])
            label = torch.stack([source_label[0], pseudo_label[0]])
            weight = torch.stack([torch.ones_like(pseudo_weight[0]), pseudo_weight[0]])
            target_index = 1
        if self.augment:
            image = batch_photometric(image, self.jitter_s, self.jitter_p, self.blur_sigma)
        mask = block_mask(image.shape, self.block_size, self.ratio, image.device)
        return MaskedBatch(image * mask, label, weight, mask, target_index)
