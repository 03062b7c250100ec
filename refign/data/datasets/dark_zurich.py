"""Dark Zurich: night-time target with day-time references (docs/refign.md#dark-zurich).

Layout under the root (``<data_root>/DarkZurich``)::

    rgb_anon/train/{night,day}/<rec>/<name>_rgb_anon.png            paired by the pairing csv
    rgb_anon/val/night/<rec>/<name>_rgb_anon.png
    rgb_anon/val_ref/day/<rec>_ref/<name>_ref_rgb_anon.png
    gt/val/night/<rec>/<name>_gt_labelTrainIds.png
    rgb_anon/test/night/<rec>/<name>_rgb_anon.png
    rgb_anon/test_ref/day/<rec>_ref/<name>_<suffix>.png              first match by name prefix

Training pairs come from ``zurich_dn_pair_train.csv`` (2416 lines ``night_stem,day_stem``, no header),
shipped with the official Refign repository (``data_modules/datasets/lists/``); copy it to
``<root>/zurich_dn_pair_train.csv`` or pass ``pairs_csv``.

Stage → split: validation and the official "test" stage read ``val`` (the numbers logged here are
**validation** numbers); the paper's numbers come from the CodaLab test server, for which
``python -m refign.predict`` exports the ``test`` split.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from refign.data.datasets.base import Entry, FolderDataset, find_files, strip_suffix
from refign.data.io import DatasetError, require_dir

IMAGE_SUFFIX = "_rgb_anon.png"
PAIRS_CSV = "zurich_dn_pair_train.csv"


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(night_stem, day_stem) rows of the pairing csv."""
    if not path.is_file():
        raise DatasetError(
            f"Dark Zurich pairing list not found: {path} (copy zurich_dn_pair_train.csv from the official "
            f"Refign repository, data_modules/datasets/lists/, or set pairs_csv)"
        )
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    bad = [i + 1 for i, row in enumerate(rows) if len(row) != 2]
    if bad or not rows:
        raise DatasetError(
            f"{path}: expected lines 'night_stem,day_stem'; bad lines {bad[:5] or 'none at all'}"
        )
    return [(night.strip(), day.strip()) for night, day in rows]


class DarkZurich(FolderDataset):
    name = "DarkZurich"
    orig_dims = (1080, 1920)
    splits = ("train", "val", "test")
    labelled_splits = ("val",)
    reference_splits = ("train", "val", "test")
    conditions = ("night",)

    def __init__(self, root: str | os.PathLike, split: str, pairs_csv: str | None = None, **kwargs) -> None:
        self.pairs_csv = Path(pairs_csv) if pairs_csv else Path(root) / PAIRS_CSV
        super().__init__(root, split, **kwargs)

    def list_entries(self) -> list[Entry]:
        if self.split == "train":
            return self._train_entries()
        images = find_files(
            self.root / "rgb_anon" / self.split / "night", IMAGE_SUFFIX, f"Dark Zurich {self.split} images"
        )
        ref_root = self.root / "rgb_anon" / f"{self.split}_ref" / "day"
        entries = []
        for img in images:
            rec, name = img.parent.name, strip_suffix(img.name, IMAGE_SUFFIX)
            ref_dir = ref_root / f"{rec}_ref"
            if self.split == "val":
                ref = ref_dir / f"{name}_ref_rgb_anon.png"
            else:  # test references carry extra suffixes: match by name prefix
                ref = self._prefixed(ref_dir, name) if "image_ref" in self.load_keys else None
            label = self.root / "gt" / self.split / "night" / rec / f"{name}_gt_labelTrainIds.png"
            entries.append(Entry(image=img, semantic=label, image_ref=ref, condition="night"))
        return entries

    def _train_entries(self) -> list[Entry]:
        base = self.root / "rgb_anon"
        require_dir(base / "train" / "night", "Dark Zurich train images")
        return [
            Entry(
                image=base / f"{night}{IMAGE_SUFFIX}",
                image_ref=base / f"{day}{IMAGE_SUFFIX}",
                condition="night",
            )
            for night, day in read_pairs(self.pairs_csv)
        ]

    @staticmethod
    def _prefixed(folder: Path, name: str) -> Path | None:
        matches: Sequence[Path] = sorted(folder.glob(f"{name}_*.png")) if folder.is_dir() else []
        return matches[0] if matches else folder / f"{name}_*.png"
