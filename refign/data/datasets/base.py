"""Shared machinery of the real-data loaders: an index of (image, label, reference) files checked up front.

Each dataset module only says where its files are (its ``Layout``, or ``list_entries`` where a list decides
which files belong to a split); loading, load-time resizing (the
official ``dims``), pairing checks and the sample dict live here, so the loaders cannot drift apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from refign.data.io import DatasetError, image_size, load_image, load_label, require_dir
from refign.data.transforms import JointTransform


@dataclass(frozen=True)
class Entry:
    """The files of one sample; ``None`` where the dataset has no such file for this split."""

    image: Path
    semantic: Path | None = None
    image_ref: Path | None = None
    condition: str = ""


@dataclass(frozen=True)
class Layout:
    """Where a dataset keeps each sample's files, as ``str.format`` templates under its root, one per key.

    The one written description of a layout: the loaders list their files with it and the tree writers
    (``refign/data/synthetic/trees.py``, the tests' fixtures) write theirs with it, so that the three cannot
    drift apart. A field of the image template that is not given is read back from the file names found.
    """

    image: str
    semantic: str | None = None
    image_ref: str | None = None

    def path(self, root: Path, key: str, **fields: str) -> Path:
        return Path(root, getattr(self, key).format(**fields))

    def folder(self, root: Path, key: str, **fields: str) -> Path:
        """The deepest folder of ``key``'s template that ``fields`` fix."""
        return Path(root, self._glob(key, fields).split("*")[0].rsplit("/", 1)[0])

    def find(self, root: Path, what: str, **fields: str) -> list[dict[str, str]]:
        """The fields of every image file that matches the template with ``fields`` filled in, sorted by path;
        a missing folder or one without a match is an error that names it."""
        pattern, folder = self._glob("image", fields), self.folder(root, "image", **fields)
        require_dir(folder, what)
        files = sorted(Path(root).glob(pattern))
        if not files:
            suffix = self.image.rsplit("}", 1)[-1]
            raise DatasetError(f"{what}: no '*{suffix}' files found in {folder} (wrong layout?)")
        regex = re.compile(self._regex(fields))
        return [fields | regex.fullmatch(f.relative_to(root).as_posix()).groupdict() for f in files]

    def entries(self, root: Path, what: str, condition: str = "", **fields: str) -> list[Entry]:
        """One entry per image found, its other files named by their templates."""
        return [
            Entry(
                image=self.path(root, "image", **found),
                semantic=self.path(root, "semantic", **found) if self.semantic else None,
                image_ref=self.path(root, "image_ref", **found) if self.image_ref else None,
                condition=condition,
            )
            for found in self.find(root, what, condition=condition, **fields)
        ]

    def _glob(self, key: str, fields: dict[str, str]) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: fields.get(m[1], "*"), getattr(self, key))

    def _regex(self, fields: dict[str, str]) -> str:
        parts = re.split(r"\{(\w+)\}", self.image)  # literal, field, literal, field, …, literal
        out = [re.escape(parts[0])]
        for name, literal in zip(parts[1::2], parts[2::2], strict=True):
            out += [re.escape(fields[name]) if name in fields else f"(?P<{name}>[^/]+)", re.escape(literal)]
        return "".join(out)


class FolderDataset(Dataset):
    """Base class of the real datasets. Subclasses set the class attributes (and ``list_entries`` where the
    layout alone does not list a split).

    Args:
        root: the dataset folder (``<paths.data_root>/<subdir>`` in the configs).
        split: a split name of the dataset itself (e.g. ACDC ``val``; see each module for the stage mapping).
        load_keys: subset of ``image``, ``image_ref``, ``semantic``.
        dims: (H, W) every image and label is resized to when loaded (official ``dims``); None = native.
        resize_labels: False keeps labels at native size while images follow ``dims`` — the official test
            pipeline (``Resize(img_only=True)``), so metrics are computed at full label resolution.
        transform: joint transform; default = normalisation to tensors only.
        conditions: a subset of the dataset's conditions to list (official ``condition`` argument); None = all.
        check_pairs: False lists the entries without requiring their paired files (``refign.check_data``
            reports every gap instead of stopping at the first).
    """

    name: str = ""
    orig_dims: tuple[int, int] = (0, 0)
    splits: tuple[str, ...] = ()
    labelled_splits: tuple[str, ...] = ()
    reference_splits: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    # True where asking for ``image_ref`` selects other samples instead of pairing the same ones (RobotCar:
    # the unlabelled correspondence pairs rather than the labelled images)
    keys_select_entries: bool = False
    layout: Layout

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        load_keys: Sequence[str] = ("image", "semantic"),
        dims: Sequence[int] | None = None,
        resize_labels: bool = True,
        transform: Callable[[dict], dict] | None = None,
        conditions: Sequence[str] | None = None,
        check_pairs: bool = True,
    ) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name}: split must be one of {list(self.splits)}, got {split!r}")
        self.load_keys = tuple(load_keys)
        allowed = set(self.offered_keys(split))
        if "image" not in self.load_keys or set(self.load_keys) - allowed:
            raise ValueError(
                f"{self.name} {split}: load_keys {list(self.load_keys)} not available "
                f"(this split offers {sorted(allowed)}, and 'image' is required)"
            )
        if conditions is not None:
            unknown = set(conditions) - set(self.conditions)
            if unknown:
                raise ValueError(
                    f"{self.name}: unknown conditions {sorted(unknown)} (has {list(self.conditions)})"
                )
            self.conditions = tuple(conditions)
        self.root, self.split = Path(root), split
        require_dir(self.root, f"{self.name} root")
        self.dims = tuple(int(d) for d in dims) if dims is not None else None
        self.resize_labels = resize_labels
        self.transform = transform if transform is not None else JointTransform()
        self.entries = self.list_entries()
        if check_pairs:
            self._check_pairs()

    def list_entries(self) -> list[Entry]:
        """Every image of the split that the layout finds, one condition after the other."""
        return [
            entry
            for cond in self.conditions
            for entry in self.layout.entries(
                self.root, f"{self.name} {self.split} {cond} images", cond, split=self.split
            )
        ]

    def _check_pairs(self) -> None:
        """Every requested label and reference must exist: a missing one is an error, never a skip."""
        for entry in self.entries:
            for key in self.load_keys:
                path = getattr(entry, key)
                if path is None or not path.is_file():
                    raise DatasetError(
                        f"{self.name} {self.split}: no {key} for {entry.image} "
                        f"(expected {path if path is not None else 'a paired file'})"
                    )

    @classmethod
    def offered_keys(cls, split: str) -> tuple[str, ...]:
        """The keys a split has files for: ``image``, and ``semantic`` / ``image_ref`` where offered."""
        labels = ("semantic",) if split in cls.labelled_splits else ()
        return ("image", *labels, *(("image_ref",) if split in cls.reference_splits else ()))

    def __len__(self) -> int:
        return len(self.entries)

    def map_label(self, label: np.ndarray) -> np.ndarray:
        """Stored label values → train ids (identity: the files already hold train ids)."""
        return label

    def read_label(self, index: int, size: Sequence[int] | None) -> np.ndarray:
        """The label of sample ``index``, nearest-resized to ``size`` when given. A label whose size differs
        from its image's is refused: the official loaders resize each file to ``dims`` on its own, which
        stretches such a label silently (or, at native size, crops it to nothing): docs/deviations.md#d2."""
        entry = self.entries[index]
        label, (ih, iw) = load_label(entry.semantic), image_size(entry.image)
        if label.shape[:2] != (ih, iw):
            raise DatasetError(
                f"{self.name} {self.split}: label {entry.semantic} is {label.shape[0]}×{label.shape[1]} but "
                f"its image {entry.image} is {ih}×{iw} (H×W); python -m refign.check_data lists every such file"
            )
        # The id mapping comes before any resize (nearest), as in the official loaders.
        label = self.map_label(label)
        if size is not None and label.shape != tuple(size):
            label = np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.NEAREST))
        return label

    def load_label(self, index: int) -> np.ndarray:
        """The native-resolution label: rare class sampling counts pixels on it, as the official class
        statistics (computed on full-size Cityscapes labels, min_pixels 3000) do."""
        return self.read_label(index, None)

    def __getitem__(self, index: int) -> dict:
        entry = self.entries[index]
        sample = {}
        for key in self.load_keys:
            if key == "semantic":
                sample[key] = self.read_label(index, self.dims if self.resize_labels else None)
            else:
                sample[key] = load_image(getattr(entry, key), self.dims)
        sample = self.transform(sample)
        sample["filename"] = entry.image.name
        sample["condition"] = entry.condition
        return sample
