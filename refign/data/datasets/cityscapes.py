"""Cityscapes, the labelled source domain (docs/refign.md#cityscapes).

Layout under the root (``<data_root>/Cityscapes``)::

    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png

The ``*_labelTrainIds.png`` files are made by ``scripts/prepare_cityscapes.py`` (cityscapesscripts).
"""

from __future__ import annotations

from refign.data.datasets.base import Entry, FolderDataset, find_files, strip_suffix

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"


class Cityscapes(FolderDataset):
    name = "Cityscapes"
    orig_dims = (1024, 2048)
    splits = ("train", "val", "test")
    labelled_splits = ("train", "val")
    conditions = ("day",)

    def list_entries(self) -> list[Entry]:
        images = find_files(self.root / "leftImg8bit" / self.split, IMAGE_SUFFIX, f"{self.name} images")
        return [
            Entry(
                image=img,
                semantic=self.root
                / "gtFine"
                / self.split
                / img.parent.name
                / (strip_suffix(img.name, IMAGE_SUFFIX) + LABEL_SUFFIX),
                condition="day",
            )
            for img in images
        ]
