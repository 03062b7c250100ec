"""ACDC: adverse-condition target with a clear-weather reference for every image (docs/refign.md#acdc).

Layout under the root (``<data_root>/ACDC``), ``<split>`` ∈ train, val, test: ``ACDC.layout``. Only the split
folder of a reference gets the ``_ref`` suffix (docs/deviations.md#d2).

Stage → split (as the official code): training uses ``train`` (image + reference), validation *and* the
official "test" stage read ``val`` — the numbers this code logs are **validation** numbers; the paper's ACDC
numbers are from the test server, for which ``python -m refign.predict`` exports the ``test`` split.
"""

from __future__ import annotations

from refign.data.datasets.base import FolderDataset, Layout


class ACDC(FolderDataset):
    name = "ACDC"
    orig_dims = (1080, 1920)
    splits = ("train", "val", "test")
    labelled_splits = ("train", "val")
    reference_splits = ("train", "val", "test")
    conditions = ("fog", "night", "rain", "snow")
    layout = Layout(
        image="rgb_anon/{condition}/{split}/{recording}/{name}_rgb_anon.png",
        image_ref="rgb_anon/{condition}/{split}_ref/{recording}/{name}_rgb_ref_anon.png",
        semantic="gt/{condition}/{split}/{recording}/{name}_gt_labelTrainIds.png",
    )
