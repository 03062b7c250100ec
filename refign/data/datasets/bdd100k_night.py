"""BDD100k-night (docs/refign.md#test-only-sets): the 87 night images of BDD100k's segmentation train+val sets, test only.

The image list (``refign/data/lists/bdd100k_night.txt``, the official Refign list) names
``seg/images/<split>/<id>.jpg``; under the root (``<data_root>/bdd100k``) the files are::

    images/10k/<split>/<id>.jpg
    labels/sem_seg/masks/<split>/<id>.png      (train ids, 255 = ignore)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path, PurePosixPath

from refign.data.datasets.base import Entry, FolderDataset
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

    def list_entries(self) -> list[Entry]:
        require_dir(self.root / "images" / "10k", "BDD100k images")
        require_dir(self.root / "labels" / "sem_seg" / "masks", "BDD100k sem_seg masks")
        entries = []
        for item in night_list():
            split, stem = item.parent.name, item.stem
            entries.append(
                Entry(
                    image=Path(self.root, "images", "10k", split, item.name),
                    semantic=Path(self.root, "labels", "sem_seg", "masks", split, f"{stem}.png"),
                    condition="night",
                )
            )
        return entries
