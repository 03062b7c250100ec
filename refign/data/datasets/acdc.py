"""ACDC: adverse-condition target with a clear-weather reference for every image (docs/refign.md#acdc).

Layout under the root (``<data_root>/ACDC``), ``<split>`` ∈ train, val, test::

    rgb_anon/<condition>/<split>/<recording>/<name>_rgb_anon.png         target image
    rgb_anon/<condition>/<split>_ref/<recording>/<name>_rgb_ref_anon.png reference image
    gt/<condition>/<split>/<recording>/<name>_gt_labelTrainIds.png       label (train ids)

Stage → split (as the official code): training uses ``train`` (image + reference), validation *and* the
official "test" stage read ``val`` — the numbers this code logs are **validation** numbers; the paper's ACDC
numbers are from the test server, for which ``python -m refign.predict`` exports the ``test`` split.
"""

from __future__ import annotations

from refign.data.datasets.base import Entry, FolderDataset, find_files, strip_suffix

IMAGE_SUFFIX = "_rgb_anon.png"


class ACDC(FolderDataset):
    name = "ACDC"
    orig_dims = (1080, 1920)
    splits = ("train", "val", "test")
    labelled_splits = ("train", "val")
    reference_splits = ("train", "val", "test")
    conditions = ("fog", "night", "rain", "snow")

    def list_entries(self) -> list[Entry]:
        entries = []
        for cond in self.conditions:
            images = find_files(
                self.root / "rgb_anon" / cond / self.split, IMAGE_SUFFIX, f"ACDC {cond} images"
            )
            for img in images:
                rec, name = img.parent.name, strip_suffix(img.name, IMAGE_SUFFIX)
                # paths from components: only the split folder gets the _ref suffix (docs/deviations.md#d2)
                ref = self.root / "rgb_anon" / cond / f"{self.split}_ref" / rec / f"{name}_rgb_ref_anon.png"
                label = self.root / "gt" / cond / self.split / rec / f"{name}_gt_labelTrainIds.png"
                entries.append(Entry(image=img, semantic=label, image_ref=ref, condition=cond))
        return entries
