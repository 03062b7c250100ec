"""Joint transforms: one random draw per sample, applied identically to every key.

A target image, its reference image, their labels and the flow between them must be cropped at the same
place and flipped together (docs/refign.md#joint-transforms). The crop needs the official ``cat_max_ratio`` re-draws and the
flip must negate the horizontal flow, neither of which albumentations offers, so both are written here; the
final normalisation reuses albumentations.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch

from refign.data.classes import IGNORE_INDEX
from refign.utils.imaging import IMAGENET_MEAN, IMAGENET_STD

IMAGE_KEYS = ("image", "image_ref")
LABEL_KEYS = ("semantic", "semantic_ref", "flow_valid")


def crop_is_acceptable(label: np.ndarray, cat_max_ratio: float) -> bool:
    """More than one class, and the most frequent class below ``cat_max_ratio`` of the labelled pixels."""
    values, counts = np.unique(label[label != IGNORE_INDEX], return_counts=True)
    return len(values) > 1 and counts.max() / counts.sum() < cat_max_ratio


class JointTransform:
    """Random crop (with ``cat_max_ratio`` re-draws), horizontal flip, ImageNet normalisation, to tensors.

    Args:
        crop_size: (h, w) of the random crop, or None for no crop (evaluation).
        cat_max_ratio: re-draw the crop up to 10 times while one class covers this fraction or more.
        flip_p: probability of a horizontal flip.
        rng: numpy generator of the crop/flip draws; the step loader replaces it before every draw with one
            seeded by (seed, epoch, index) (``refign.data.loader.SeededDataset``).
    """

    def __init__(
        self,
        crop_size: Sequence[int] | None = None,
        cat_max_ratio: float = 1.0,
        flip_p: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> None:
        if crop_size is not None and not (len(crop_size) == 2 and min(crop_size) > 0):
            # a side of 0 would crop every sample to nothing (dataset.crop_size in the configs)
            raise ValueError(f"crop_size={list(crop_size)}: must be [height, width], both > 0")
        self.crop_size = tuple(crop_size) if crop_size is not None else None
        self.cat_max_ratio = cat_max_ratio
        self.flip_p = flip_p
        self.rng = rng or np.random.default_rng()
        self.normalize = A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD, max_pixel_value=255.0)

    def _crop_box(self, sample: dict) -> tuple[int, int, int, int]:
        h, w = sample["image"].shape[:2]
        ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        for _ in range(10):
            y, x = int(self.rng.integers(0, h - ch + 1)), int(self.rng.integers(0, w - cw + 1))
            if self.cat_max_ratio >= 1 or "semantic" not in sample:
                break
            if crop_is_acceptable(sample["semantic"][y : y + ch, x : x + cw], self.cat_max_ratio):
                break
        return y, y + ch, x, x + cw

    def __call__(self, sample: dict) -> dict:
        out = dict(sample)
        if self.crop_size is not None:
            y1, y2, x1, x2 = self._crop_box(sample)
            for key in (*IMAGE_KEYS, *LABEL_KEYS, "flow"):
                if key in out:
                    out[key] = out[key][..., y1:y2, x1:x2] if key == "flow" else out[key][y1:y2, x1:x2]
        if self.flip_p > 0 and self.rng.random() < self.flip_p:
            for key in (*IMAGE_KEYS, *LABEL_KEYS, "flow"):
                if key in out:
                    out[key] = np.ascontiguousarray(
                        out[key][..., ::-1] if key == "flow" else out[key][:, ::-1]
                    )
            if "flow" in out:
                out["flow"] = out["flow"] * np.array([-1, 1], np.float32)[:, None, None]
        return to_tensors(out, self.normalize)


def to_tensors(sample: dict, normalize: A.Normalize) -> dict:
    """HWC uint8 images → normalised CHW float tensors; labels → int64; masks → bool."""
    out = {}
    for key, value in sample.items():
        if key in IMAGE_KEYS:
            out[key] = torch.from_numpy(normalize(image=value)["image"].transpose(2, 0, 1).copy())
        elif key in ("semantic", "semantic_ref"):
            out[key] = torch.tensor(value, dtype=torch.long)
        elif key == "flow_valid":
            out[key] = torch.tensor(value, dtype=torch.bool)
        elif key == "flow":
            out[key] = torch.tensor(value, dtype=torch.float32)
        else:
            out[key] = value
    return out
