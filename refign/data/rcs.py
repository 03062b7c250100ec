"""Rare class sampling (DAFormer; docs/self-training.md#rare-class-sampling): draw a class by its rarity, then an image containing it.

Wraps any source dataset that offers

* ``__len__()`` and ``__getitem__(i) -> dict`` with a ``"semantic"`` (H, W) label tensor after augmentation,
* ``load_label(i) -> np.ndarray``: the full-size label of image ``i`` (train ids, 255 = ignore), read once
  for the class statistics,
* optionally ``fingerprint: str`` identifying its content (otherwise one is derived from its length and a
  few labels), and ``transform.rng``: the per-draw numpy generator the step loader seeds, which RCS then
  shares so that resumed runs draw the same classes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from refign.utils.progress import progress_bar

log = logging.getLogger(__name__)


def class_pixel_counts(dataset: Dataset, num_classes: int) -> np.ndarray:
    """(N, C) number of pixels of every class in every full-size label (ignore and unknown ids skipped)."""
    counts = np.zeros((len(dataset), num_classes), dtype=np.int64)
    for i in progress_bar(range(len(dataset)), desc="rare class sampling: class statistics"):
        label = np.asarray(dataset.load_label(i)).ravel()
        counts[i] = np.bincount(label[label < num_classes], minlength=num_classes)[:num_classes]
    return counts


def dataset_fingerprint(dataset: Dataset) -> str:
    if getattr(dataset, "fingerprint", None):
        return str(dataset.fingerprint)
    h = hashlib.sha1(f"{type(dataset).__name__}:{len(dataset)}".encode())
    for i in sorted({0, len(dataset) // 2, len(dataset) - 1}):
        h.update(np.ascontiguousarray(dataset.load_label(i)).tobytes())
    return h.hexdigest()[:12]


def load_or_compute_counts(
    dataset: Dataset, num_classes: int, cache_file: str | os.PathLike | None
) -> np.ndarray:
    """Class statistics from ``cache_file`` when it was made from this very dataset, else computed and
    (re)written; a cache of another or changed dataset is reported and replaced, never used."""
    key = {
        "fingerprint": dataset_fingerprint(dataset),
        "num_images": len(dataset),
        "num_classes": num_classes,
    }
    path = Path(cache_file) if cache_file else None
    if path is not None and path.exists():
        try:
            cached = json.loads(path.read_text())
            if {k: cached.get(k) for k in key} == key:
                return np.asarray(cached["counts"], dtype=np.int64)
            log.warning(
                "rare class sampling: %s was made for another dataset (%s, now %s); recomputing",
                path,
                {k: cached.get(k) for k in key},
                key,
            )
        except (json.JSONDecodeError, KeyError) as err:
            log.warning("rare class sampling: unreadable cache %s (%s); recomputing", path, err)
    counts = class_pixel_counts(dataset, num_classes)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**key, "counts": counts.tolist()}))
        os.replace(tmp, path)
    return counts


def class_probabilities(counts: np.ndarray, temperature: float) -> np.ndarray:
    """P(c) = softmax((1 − f_c) / T) over the classes present in the data (absent ones get 0)."""
    total = counts.sum(0).astype(np.float64)
    present = total > 0
    logits = (1 - total[present] / total.sum()) / temperature
    p = np.exp(logits - logits.max())
    probs = np.zeros(len(total))
    probs[present] = p / p.sum()
    return probs


class RareClassSampler(Dataset):
    """A source dataset whose samples are drawn by rare class sampling; the requested index is ignored.

    Args:
        dataset: the wrapped source dataset (interface in the module docstring).
        num_classes: number of classes.
        class_temp: temperature T of the class softmax (0.01).
        min_pixels: an image is a candidate for class c when its full label has more than this many pixels
            of c (3000 for full-resolution Cityscapes).
        min_crop_ratio: re-augment (new crop/flip, same image) up to ``max_redraws`` times until the crop has
            more than ``min_pixels · min_crop_ratio`` pixels of c; 0 disables.
        cache_file: JSON file for the per-image class statistics (None: recompute every run).
        max_redraws: number of re-augmentations.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_classes: int,
        class_temp: float,
        min_pixels: int,
        min_crop_ratio: float,
        cache_file: str | os.PathLike | None = None,
        max_redraws: int = 10,
    ) -> None:
        self.dataset = dataset
        self.min_pixels, self.min_crop_ratio, self.max_redraws = min_pixels, min_crop_ratio, max_redraws
        counts = load_or_compute_counts(dataset, num_classes, cache_file)
        probs = class_probabilities(counts, class_temp)
        self.images_with_class = {c: np.flatnonzero(counts[:, c] > min_pixels) for c in range(num_classes)}
        # The official code asserts that every present class has a candidate image; here such classes are
        # dropped (with a warning) and the others renormalised, i.e. P(c | c has a candidate).
        orphans = [int(c) for c in np.flatnonzero(probs) if len(self.images_with_class[c]) == 0]
        if orphans:
            log.warning(
                "rare class sampling: classes %s never exceed %d pixels in one image; not sampled",
                orphans,
                min_pixels,
            )
            probs[orphans] = 0
        if probs.sum() == 0:
            raise ValueError(f"rare class sampling: no image has more than {min_pixels} pixels of any class")
        self.classes = np.flatnonzero(probs)
        self.probs = probs[self.classes] / probs[self.classes].sum()

    @property
    def transform(self):
        """The wrapped dataset's transform, so the step loader seeds the generator RCS draws from."""
        return getattr(self.dataset, "transform", None)

    def _rng(self) -> np.random.Generator:
        """The loader-seeded generator of the transform, else numpy's global one (seeded by the run)."""
        rng = getattr(self.transform, "rng", None)
        return rng if rng is not None else np.random.mtrand._rand

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """A class by its rarity, then uniformly one image with enough pixels of it."""
        c = int(rng.choice(self.classes, p=self.probs))
        return c, int(rng.choice(self.images_with_class[c]))

    def __getitem__(self, index: int) -> dict:
        c, i = self.draw(self._rng())
        sample = self.dataset[i]
        if self.min_crop_ratio > 0:
            for _ in range(self.max_redraws):
                if int((sample["semantic"] == c).sum()) > self.min_pixels * self.min_crop_ratio:
                    break
                sample = self.dataset[i]
        return sample
