"""BDD100k-night (docs/refign.md#test-only-sets): the 87 night images of BDD100k's segmentation train+val sets, test only.

The image list (``refign/data/lists/bdd100k_night.txt``, the official Refign list) names
``seg/images/<split>/<id>.jpg``; where the files are under the root (``<data_root>/bdd100k``):
``BDD100kNight.layout``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath

from refign.data.datasets.base import Entry, FolderDataset, Layout
from refign.data.io import require_dir

LIST = "lists/bdd100k_night.txt"


def night_list() -> list[PurePosixPath]:
    text = resources.files("refign.data").joinpath(LIST).read_text()
    return [PurePosixPath(line.strip()) for line in text.splitlines() if line.strip()]


class BDD100kNight(FolderDataset):
    name = "BDD100kNight"
    orig_dims = (720, 1280)
    splits = ("test",)
    labelled_splits = ("test",)
    conditions = ("night",)
    layout = Layout(image="images/10k/{split}/{stem}.jpg", semantic="labels/sem_seg/masks/{split}/{stem}.png")

    def list_entries(self) -> list[Entry]:
        require_dir(self.layout.folder(self.root, "image"), "BDD100k images")
        require_dir(self.layout.folder(self.root, "semantic"), "BDD100k sem_seg masks")
        entries = []
        for item in night_list():
            fields = {"split": item.parent.name, "stem": item.stem}
            image, label = (self.layout.path(self.root, key, **fields) for key in ("image", "semantic"))
            entries.append(Entry(image=image, semantic=label, condition="night"))
        return entries
