"""RobotCar Seasons correspondences and RobotCar for Segmentation (docs/refign.md#robotcar).

Layout under the root (``<data_root>/RobotCar``): ``RobotCar.layout`` for RobotCar for Segmentation (labels
are Cityscapes *label ids*), ``CORRESPONDENCES`` for the RobotCar Seasons pairs: one MATLAB v7.3 file per pair
naming its two images under ``images/``.

Splits ``train``/``val``/``test`` are the folders ``training``/``validation``/``testing`` (RobotCar has a
real labelled test set, so here "test" is test). Asking for ``image_ref`` (train only) selects the
unlabelled correspondence pairs instead of the labelled images, as the official loader does. Reading the
``.mat`` files needs ``h5py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from refign.data.datasets.base import Entry, FolderDataset, Layout
from refign.data.io import DatasetError

SPLIT_DIRS = {"train": "training", "val": "validation", "test": "testing"}
CORRESPONDENCES = Layout(image="correspondence_data/{pair}.mat")
IMAGES = "images"  # the folder the correspondence files' paths are relative to

# Cityscapes label id → train id; every other id is ignored (255).
ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12}
ID_TO_TRAINID |= {26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LUT = np.full(256, 255, np.uint8)
LUT[list(ID_TO_TRAINID)] = list(ID_TO_TRAINID.values())


def read_correspondence(path: Path) -> tuple[str, str]:
    """(reference, target) image paths relative to ``images/``: ``im_i_path`` is the normal-condition
    reference, ``im_j_path`` the adverse target; both are stored as arrays of character codes."""
    try:
        import h5py
    except ImportError as err:
        raise DatasetError(
            f"reading RobotCar correspondences ({path}) needs h5py, which is not installed "
            f"(pip install h5py, listed in requirements/base.txt)"
        ) from err
    try:
        with h5py.File(path, "r") as f:
            ref, target = (
                "".join(chr(int(c)) for c in np.asarray(f[key]).ravel()) for key in ("im_i_path", "im_j_path")
            )
    except (OSError, KeyError) as err:
        raise DatasetError(f"cannot read correspondence file {path}: {err}") from err
    return ref, target


class RobotCar(FolderDataset):
    name = "RobotCar"
    orig_dims = (1024, 1024)
    splits = ("train", "val", "test")
    labelled_splits = ("train", "val", "test")
    reference_splits = ("train",)
    keys_select_entries = True

    layout = Layout(
        image="segmented_images/{split}/imgs/{name}", semantic="segmented_images/{split}/annos/{name}"
    )

    def list_entries(self) -> list[Entry]:
        if "image_ref" not in self.load_keys:
            split = SPLIT_DIRS[self.split]
            return self.layout.entries(self.root, f"RobotCar {split} images", split=split)
        entries = []
        for mat in CORRESPONDENCES.entries(self.root, "RobotCar correspondences"):
            ref, target = read_correspondence(mat.image)
            entries.append(Entry(image=self.root / IMAGES / target, image_ref=self.root / IMAGES / ref))
        return entries

    def map_label(self, label: np.ndarray) -> np.ndarray:
        return LUT[label]
