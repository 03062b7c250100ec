"""Nighttime Driving test set (Dai & Van Gool 2018; docs/refign.md#test-only-sets): 50 labelled night images, test only.

Layout under the root (``<data_root>/NighttimeDrivingTest``)::

    leftImg8bit/test/night/<name>_leftImg8bit.png
    gtCoarse_daytime_trainvaltest/test/night/<name>_gtCoarse_labelTrainIds.png
"""

from __future__ import annotations

from refign.data.datasets.base import Entry, FolderDataset, find_files, strip_suffix

IMAGE_SUFFIX = "_leftImg8bit.png"


class NighttimeDriving(FolderDataset):
    name = "NighttimeDriving"
    orig_dims = (1080, 1920)
    splits = ("test",)
    labelled_splits = ("test",)
    conditions = ("night",)

    def list_entries(self) -> list[Entry]:
        images = find_files(self.root / "leftImg8bit" / "test", IMAGE_SUFFIX, "Nighttime Driving images")
        label_dir = self.root / "gtCoarse_daytime_trainvaltest" / "test" / "night"
        return [
            Entry(
                image=img,
                semantic=label_dir / (strip_suffix(img.name, IMAGE_SUFFIX) + "_gtCoarse_labelTrainIds.png"),
                condition="night",
            )
            for img in images
        ]
