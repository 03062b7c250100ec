"""The embedded synthetic benchmark: Cityscapes-like source, adverse target, clear references, GT flow.

Samples are generated deterministically from ``(seed, split, domain, index)`` and cached as one ``.npz`` per
dataset configuration under ``cache_dir``, so every run and test after the first loads them in a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from refign.data.synthetic.generator import GENERATOR_VERSION, ViewConfig, generate
from refign.utils.progress import progress_bar

log = logging.getLogger(__name__)
SPLITS = {"train": 0, "val": 1, "test": 2}
DOMAINS = {"source": 0, "target": 1}
ARRAY_KEYS = ("image", "semantic", "image_ref", "semantic_ref", "flow", "flow_valid")


class SyntheticDataset(Dataset):
    """One split of one domain of the synthetic benchmark.

    Args:
        split: ``train``, ``val`` or ``test``.
        domain: ``source`` (clear day, labelled) or ``target`` (adverse, with reference and flow).
        num_images: number of samples in this split.
        size: (H, W) of every image.
        seed: base seed of the generator (the benchmark itself, not the training run).
        conditions: adverse conditions cycled over the target samples.
        load_keys: keys returned by ``__getitem__`` (``filename`` and ``condition`` are always added).
        transform: joint transform applied to the sample dict.
        cache_dir: where generated arrays are cached; None disables caching.
    """

    def __init__(
        self,
        split: str,
        domain: str,
        num_images: int,
        size: Sequence[int] = (128, 256),
        seed: int = 0,
        conditions: Sequence[str] = ("night", "fog", "rain", "snow"),
        load_keys: Sequence[str] = ("image", "semantic"),
        transform: Callable[[dict], dict] | None = None,
        cache_dir: str | os.PathLike | None = None,
        views: dict | None = None,
    ) -> None:
        if split not in SPLITS or domain not in DOMAINS:
            raise ValueError(
                f"synthetic dataset: split must be one of {list(SPLITS)} and domain one of "
                f"{list(DOMAINS)}, got split={split!r}, domain={domain!r}"
            )
        unknown = set(load_keys) - set(ARRAY_KEYS)
        if domain == "source":
            unknown |= set(load_keys) & {"image_ref", "semantic_ref", "flow", "flow_valid"}
        if unknown:
            raise ValueError(f"synthetic {domain} dataset cannot provide keys {sorted(unknown)}")
        self.split, self.domain = split, domain
        self.size = (int(size[0]), int(size[1]))
        self.conditions = tuple(conditions) if domain == "target" else (None,)
        self.load_keys = tuple(load_keys)
        self.transform = transform
        self.views = ViewConfig(**(views or {}))
        self.params = {
            "version": GENERATOR_VERSION,
            "split": split,
            "domain": domain,
            "n": int(num_images),
            "size": self.size,
            "seed": int(seed),
            "conditions": self.conditions,
            "views": self.views.__dict__,
        }
        self.arrays = self._load_or_generate(Path(cache_dir) if cache_dir else None)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.params, sort_keys=True).encode()).hexdigest()[:12]

    def _generate(self) -> dict[str, np.ndarray]:
        n, seed = self.params["n"], self.params["seed"]
        samples = [
            generate(
                (seed, SPLITS[self.split], DOMAINS[self.domain], i),
                self.size,
                self.conditions[i % len(self.conditions)],
                self.views,
            )
            for i in progress_bar(
                range(n), desc=f"generating synthetic {self.domain}/{self.split}", leave=False, disable=n < 50
            )
        ]
        return {k: np.stack([s[k] for s in samples]) for k in samples[0]}

    def _load_or_generate(self, cache_dir: Path | None) -> dict[str, np.ndarray]:
        if cache_dir is None:
            return self._generate()
        path = cache_dir / f"synthetic_{self.domain}_{self.split}_{self.fingerprint}.npz"
        if path.exists():
            try:
                with np.load(path) as data:
                    return {k: data[k] for k in data.files}
            except (OSError, ValueError) as err:  # a cache cut short by an interrupted run
                log.warning("ignoring unreadable cache %s (%s); regenerating", path, err)
        arrays = self._generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return arrays

    def __len__(self) -> int:
        return self.params["n"]

    def condition(self, index: int) -> str:
        return self.conditions[index % len(self.conditions)] or "clear"

    def load_label(self, index: int) -> np.ndarray:
        """The full-size label of a sample (used by rare class sampling statistics)."""
        return self.arrays["semantic"][index]

    def __getitem__(self, index: int) -> dict:
        sample = {k: self.arrays[k][index] for k in self.load_keys}
        sample = self.transform(sample) if self.transform else sample
        sample["filename"] = f"{self.domain}_{self.split}_{index:05d}.png"
        sample["condition"] = self.condition(index)
        return sample
