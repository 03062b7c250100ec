"""Cityscapes, the labelled source domain (docs/refign.md#cityscapes); layout under the root
(``<data_root>/Cityscapes``): ``Cityscapes.layout``.

The ``*_labelTrainIds.png`` files are made by ``scripts/prepare_cityscapes.py`` (cityscapesscripts).
"""

from __future__ import annotations

from refign.data.datasets.base import FolderDataset, Layout


class Cityscapes(FolderDataset):
    name = "Cityscapes"
    orig_dims = (1024, 2048)
    splits = ("train", "val", "test")
    labelled_splits = ("train", "val")
    conditions = ("day",)
    layout = Layout(
        image="leftImg8bit/{split}/{city}/{name}_leftImg8bit.png",
        semantic="gtFine/{split}/{city}/{name}_gtFine_labelTrainIds.png",
    )
