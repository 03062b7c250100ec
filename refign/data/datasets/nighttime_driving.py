"""Nighttime Driving test set (Dai & Van Gool 2018; docs/refign.md#test-only-sets): 50 labelled night images,
test only; layout under the root (``<data_root>/NighttimeDrivingTest``): ``NighttimeDriving.layout``."""

from __future__ import annotations

from refign.data.datasets.base import FolderDataset, Layout


class NighttimeDriving(FolderDataset):
    name = "NighttimeDriving"
    orig_dims = (1080, 1920)
    splits = ("test",)
    labelled_splits = ("test",)
    conditions = ("night",)
    layout = Layout(
        image="leftImg8bit/{split}/{folder}/{name}_leftImg8bit.png",
        semantic="gtCoarse_daytime_trainvaltest/{split}/night/{name}_gtCoarse_labelTrainIds.png",
    )
