"""Dark Zurich: night-time target with day-time references (docs/refign.md#dark-zurich).

Layout under the root (``<data_root>/DarkZurich``): ``DarkZurich.layout`` for val and test (a test reference
is the first file whose name starts with its image's name: test references carry extra suffixes), and
``TRAIN_PAIRS`` for the training pairs, named by the pairing csv.

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
from dataclasses import replace
from pathlib import Path

from refign.data.datasets.base import Entry, FolderDataset, Layout
from refign.data.io import DatasetError, require_dir

PAIRS_CSV = "zurich_dn_pair_train.csv"
# the csv's stems name both images of a pair, e.g. train/night/GOPR0351/GOPR0351_frame_000001
TRAIN_PAIRS = Layout(image="rgb_anon/{night}_rgb_anon.png", image_ref="rgb_anon/{day}_rgb_anon.png")


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
    layout = Layout(
        image="rgb_anon/{split}/night/{recording}/{name}_rgb_anon.png",
        image_ref="rgb_anon/{split}_ref/day/{recording}_ref/{name}_ref_rgb_anon.png",
        semantic="gt/{split}/night/{recording}/{name}_gt_labelTrainIds.png",
    )

    def __init__(self, root: str | os.PathLike, split: str, pairs_csv: str | None = None, **kwargs) -> None:
        self.pairs_csv = Path(pairs_csv) if pairs_csv else Path(root) / PAIRS_CSV
        super().__init__(root, split, **kwargs)

    def list_entries(self) -> list[Entry]:
        if self.split == "train":
            night_folder = TRAIN_PAIRS.folder(
                self.root, "image", night="train/night/"
            )  # rgb_anon/train/night
            require_dir(night_folder, "Dark Zurich train images")
            return [
                Entry(
                    image=TRAIN_PAIRS.path(self.root, "image", night=night),
                    image_ref=TRAIN_PAIRS.path(self.root, "image_ref", day=day),
                    condition="night",
                )
                for night, day in read_pairs(self.pairs_csv)
            ]
        entries = super().list_entries()
        if self.split == "test":
            entries = [
                replace(e, image_ref=self._prefixed(e) if "image_ref" in self.load_keys else None)
                for e in entries
            ]
        return entries

    @staticmethod
    def _prefixed(entry: Entry) -> Path:
        """The first reference whose name starts with the image's name (or that pattern, reported missing)."""
        folder, name = entry.image_ref.parent, entry.image_ref.name.removesuffix("_ref_rgb_anon.png")
        matches: Sequence[Path] = sorted(folder.glob(f"{name}_*.png")) if folder.is_dir() else []
        return matches[0] if matches else folder / f"{name}_*.png"
