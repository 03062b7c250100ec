"""DACS ClassMix: paste half of the source classes onto the target (docs/self-training.md#classmix)."""

from __future__ import annotations

import numpy as np
import torch
from torch._subclasses.fake_tensor import is_fake


def batch_classes(labels: torch.Tensor) -> np.ndarray:
    """The classes present in ``labels``, read to the host, where the official draw happens (on a GPU, one
    synchronisation per step). Fake labels, traced without values by ``refign.estimate``, stand for one class
    0: the masks' shapes and memory do not depend on which classes are drawn."""
    if is_fake(labels):
        return np.zeros(1, dtype=np.int64)
    return torch.unique(labels).cpu().numpy()


def class_masks(labels: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
    """One binary mask per source label, each selecting ⌈n/2⌉ of the n classes of the whole batch.

    The candidate classes are the union over the **entire** source batch (ignore label included when present),
    not those of the image being pasted: the DACS bug the official code keeps (docs/quirks.md#q3). Classes are drawn
    uniformly without replacement, independently per image.

    Returns a float tensor (B, H, W) with 1 where the source pixel is pasted.
    """
    draw = (rng or np.random).choice  # the global numpy RNG by default, as the official code
    classes = batch_classes(labels)
    n = len(classes)
    masks = []
    for label in labels:
        chosen = draw(classes, (n + n % 2) // 2, replace=False)
        masks.append(torch.isin(label, torch.as_tensor(chosen, device=labels.device)))
    return torch.stack(masks).float()


def mix(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mask·source + (1−mask)·target`` with the (B, H, W) mask broadcast over any channel dimension."""
    m = mask if source.dim() == mask.dim() else mask.unsqueeze(1)
    return m * source + (1 - m) * target


def class_mix(
    mask: torch.Tensor,
    image_src: torch.Tensor,
    label_src: torch.Tensor,
    image_trg: torch.Tensor,
    pseudo_label: torch.Tensor,
    pseudo_weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixed image, label (int64) and pixel weight; pasted source pixels get weight 1."""
    image = mix(mask, image_src, image_trg)
    label = torch.where(mask.bool(), label_src, pseudo_label)
    weight = mix(mask, torch.ones_like(pseudo_weight), pseudo_weight)
    return image, label, weight
