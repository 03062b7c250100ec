"""Dataset trees in the real layouts and file names, rendered by the synthetic scene generator.

``write_tree(out, datasets, images)`` writes what the real-data loaders (``refign/data/datasets/``) read —
Cityscapes, ACDC, Dark Zurich (with its pairing csv), Nighttime Driving, BDD100k-night and RobotCar (with its
correspondence files) — at their native resolutions, so that an installation, a GPU or a configuration can be
checked at true size before downloading 100 GB (docs/performance.md#dataset-trees).

Every target image is rendered with its clear-weather reference from one scene of the synthetic benchmark's
generator (another viewpoint of the same street, traffic changed), so labels, references and the geometry
between them mean what they mean in the real data. The generator's scenes are drawn in the pixel units of
its CPU benchmark (poles a few pixels wide, 6-px bricks), so a sample is rendered at a quarter of the
native side (``RENDER_DIVISOR``) and upsampled — images bicubically, labels by nearest neighbour — rather than
rendered at 1080×1920, where its poles and signs would be hair-thin and one sample takes ~10 s instead of 0.2.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import h5py
import numpy as np
from PIL import Image

from refign.data.datasets.acdc import ACDC
from refign.data.datasets.base import Layout
from refign.data.datasets.bdd100k_night import BDD100kNight, night_list
from refign.data.datasets.cityscapes import Cityscapes
from refign.data.datasets.dark_zurich import PAIRS_CSV, TRAIN_PAIRS, DarkZurich
from refign.data.datasets.nighttime_driving import NighttimeDriving
from refign.data.datasets.robotcar import CORRESPONDENCES, ID_TO_TRAINID, IMAGES, SPLIT_DIRS, RobotCar
from refign.data.synthetic.generator import ViewConfig, generate

RENDER_DIVISOR = 4
# Cityscapes train id → label id (RobotCar's annotations store label ids)
TRAINID_TO_ID = np.full(256, 0, np.uint8)
TRAINID_TO_ID[list(ID_TO_TRAINID.values())] = list(ID_TO_TRAINID)
# RobotCar Seasons condition folders and the generator's rendering of each
ROBOTCAR_CONDITIONS = {"night": "night", "night-rain": "night", "rain": "rain", "snow": "snow"}


@dataclass(frozen=True)
class Sample:
    """One rendered sample at the requested size: target/source image, its label, and (targets) the
    clear-weather reference of the same scene with that view's label."""

    image: np.ndarray
    semantic: np.ndarray
    image_ref: np.ndarray | None = None
    semantic_ref: np.ndarray | None = None


class Renderer:
    """Renders samples of one dataset at ``size`` (H, W); ``seed`` keys every sample (dataset, split, index)."""

    def __init__(self, dataset_id: int, size: tuple[int, int], views: ViewConfig | None = None) -> None:
        self.dataset_id, self.size = dataset_id, size
        self.render_size = tuple(max(32, round(s / RENDER_DIVISOR)) for s in size)
        self.views = views or ViewConfig()

    def __call__(self, split: int, index: int, condition: str | None) -> Sample:
        raw = generate((self.dataset_id, split, index), self.render_size, condition, self.views)
        up = {k: self._resize(raw[k], k.startswith("semantic")) for k in raw if not k.startswith("flow")}
        return Sample(up["image"], up["semantic"], up.get("image_ref"), up.get("semantic_ref"))

    def _resize(self, array: np.ndarray, nearest: bool) -> np.ndarray:
        (h, w), mode = self.size, cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC
        return cv2.resize(array, (w, h), interpolation=mode)


def save(path: Path, array: np.ndarray) -> None:
    """PNG (fast compression) or JPEG by suffix; RGB arrays (H, W, 3) or labels (H, W) as 8-bit grey."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array, "RGB" if array.ndim == 3 else "L")
    if path.suffix == ".jpg":
        img.save(path, quality=90)
    else:
        img.save(path, compress_level=1)


def write(
    root: Path, layout: Layout, sample: Sample, labelled: bool = True, reference: bool = True, **fields: str
) -> None:
    """A sample's image, and its label and reference where the layout has them (unless switched off), at
    the paths the layout gives ``fields``."""
    save(layout.path(root, "image", **fields), sample.image)
    if layout.semantic and labelled:
        save(layout.path(root, "semantic", **fields), sample.semantic)
    if layout.image_ref and reference:
        save(layout.path(root, "image_ref", **fields), sample.image_ref)


def write_correspondence(path: Path, ref: str, target: str) -> None:
    """A RobotCar Seasons correspondence file (MATLAB v7.3, i.e. HDF5) naming the pair's two images as
    character codes, as ``read_correspondence`` reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, rel in (("im_i_path", ref), ("im_j_path", target)):
            f[key] = np.array([[ord(c)] for c in rel], np.uint16)


def scaled(size: tuple[int, int], divisor: int) -> tuple[int, int]:
    return size[0] // divisor, size[1] // divisor


@dataclass(frozen=True)
class Counts:
    """Images per training split and per evaluation (val/test) split."""

    train: int
    eval: int

    def of(self, split: str) -> int:
        return self.train if split in ("train", "training") else self.eval


# ---- one writer per dataset: the files where each loader's layout (refign/data/datasets/) names them ------
def cityscapes(root: Path, n: Counts, divisor: int) -> None:
    """leftImg8bit + gtFine trainIds, one city per split, 1024×2048."""
    render = Renderer(1, scaled(Cityscapes.orig_dims, divisor))
    for s, (split, city) in enumerate((("train", "aachen"), ("val", "frankfurt"), ("test", "berlin"))):
        for i in range(n.of(split)):
            sample = render(s, i, None)
            write(root, Cityscapes.layout, sample, split=split, city=city, name=f"{city}_{i:06d}_000019")


def acdc(root: Path, n: Counts, divisor: int) -> None:
    """Every condition and split with its references; labels for train and val (test labels are hidden)."""
    render = Renderer(2, scaled(ACDC.orig_dims, divisor))
    for c, cond in enumerate(ACDC.conditions):
        for s, split in enumerate(ACDC.splits):
            for i in range(n.of(split)):
                rec = f"GOPR04{75 + c}"
                sample = render(10 * c + s, i, cond)
                fields = {
                    "condition": cond,
                    "split": split,
                    "recording": rec,
                    "name": f"{rec}_frame_{100 * s + i:06d}",
                }
                write(root, ACDC.layout, sample, labelled=split in ACDC.labelled_splits, **fields)


def dark_zurich(root: Path, n: Counts, divisor: int) -> None:
    """Night images with day references: train pairs in zurich_dn_pair_train.csv, val with labels and
    ``val_ref``, test with ``test_ref`` files carrying the reference frame's own number."""
    render = Renderer(3, scaled(DarkZurich.orig_dims, divisor))
    rows = []
    for i in range(n.train):
        night = f"train/night/GOPR0351/GOPR0351_frame_{i:06d}"
        day = f"train/day/GOPR0345/GOPR0345_frame_{80 + i:06d}"
        write(root, TRAIN_PAIRS, render(0, i, "night"), night=night, day=day)
        rows.append((night, day))
    with (root / PAIRS_CSV).open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    for s, split in ((1, "val"), (2, "test")):
        for i in range(n.of(split)):
            fields = {"split": split, "recording": "GOPR0356", "name": f"GOPR0356_frame_{100 * s + i:06d}"}
            sample = render(s, i, "night")
            write(
                root, DarkZurich.layout, sample, labelled=split == "val", reference=split == "val", **fields
            )
            if split == "test":  # the reference is found by its name's prefix
                ref = DarkZurich.layout.path(root, "image_ref", **fields)
                save(ref.with_name(f"{fields['name']}_ref_frame_{i:06d}_rgb_anon.png"), sample.image_ref)


def nighttime_driving(root: Path, n: Counts, divisor: int) -> None:
    """Labelled night test images (coarse trainIds), 1080×1920."""
    render = Renderer(4, scaled(NighttimeDriving.orig_dims, divisor))
    for i in range(n.eval):
        fields = {"split": "test", "folder": "night", "name": f"0_frame_{i:04d}"}
        write(root, NighttimeDriving.layout, render(2, i, "night"), **fields)


def bdd100k_night(root: Path, n: Counts, divisor: int) -> None:
    """All 87 images of the official night list (the loader reads the whole list, whatever ``n``), 720×1280
    JPEGs with trainId masks."""
    render = Renderer(5, scaled(BDD100kNight.orig_dims, divisor))
    for i, item in enumerate(night_list()):
        write(root, BDD100kNight.layout, render(2, i, "night"), split=item.parent.name, stem=item.stem)


def robotcar(root: Path, n: Counts, divisor: int) -> None:
    """RobotCar Seasons pairs (``images/<condition>/rear/<timestamp>.jpg`` against the overcast reference,
    one MATLAB v7.3 correspondence file each) and RobotCar for Segmentation (label *ids*), 1024×1024."""
    render = Renderer(6, scaled(RobotCar.orig_dims, divisor))
    conditions = list(ROBOTCAR_CONDITIONS)
    for i in range(n.train):
        cond = conditions[i % len(conditions)]
        sample = render(0, i, ROBOTCAR_CONDITIONS[cond])
        ref, target = (
            f"overcast-reference/rear/{1417176458999821 + i}.jpg",
            f"{cond}/rear/{1418721355 + i}.jpg",
        )
        save(root / IMAGES / ref, sample.image_ref)
        save(root / IMAGES / target, sample.image)
        write_correspondence(CORRESPONDENCES.path(root, "image", pair=f"{cond}_{i:04d}"), ref, target)
    for s, split in enumerate(SPLIT_DIRS.values(), start=1):
        for i in range(n.of(split)):
            sample = render(s, i, None)
            sample = replace(sample, semantic=TRAINID_TO_ID[sample.semantic])
            write(root, RobotCar.layout, sample, split=split, name=f"{1418132416737115 + 1000 * s + i}.png")


# name on the command line → (folder under the data root, as conf/dataset/*.yaml expects it; writer)
WRITERS: dict[str, tuple[str, Callable[[Path, Counts, int], None]]] = {
    "cityscapes": ("Cityscapes", cityscapes),
    "acdc": ("ACDC", acdc),
    "dark_zurich": ("DarkZurich", dark_zurich),
    "nighttime_driving": ("NighttimeDrivingTest", nighttime_driving),
    "bdd100k_night": ("bdd100k", bdd100k_night),
    "robotcar": ("RobotCar", robotcar),
}


class TreeError(ValueError):
    """A request that would touch existing data or names nothing that can be written."""


def write_tree(
    out: Path,
    datasets: Sequence[str],
    images: int,
    overwrite: bool = False,
    divisor: int = 1,
    eval_images: int | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Write ``images`` samples per training split and ``eval_images`` (default: ``images``) per val/test
    split of every dataset in ``datasets`` under ``out``.

    A non-empty ``out`` is refused unless ``overwrite``; then only the folders of the named datasets are
    replaced. ``divisor`` > 1 shrinks every side (quick tests only: the point of the trees is true size).
    """
    unknown = [d for d in datasets if d not in WRITERS]
    if unknown:
        raise TreeError(f"unknown dataset(s) {unknown}; choose from {list(WRITERS)}")
    counts = Counts(images, images if eval_images is None else eval_images)
    if min(counts.train, counts.eval, divisor) < 1:
        raise TreeError(f"image counts and the size divisor must be ≥ 1 (got {counts}, divisor {divisor})")
    if out.exists() and not out.is_dir():
        raise TreeError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TreeError(f"{out} is not empty; pass --overwrite to replace the named datasets' folders in it")
    for name in datasets:
        folder, writer = WRITERS[name]
        if (out / folder).exists():
            shutil.rmtree(out / folder)
        log(f"writing {name} into {out / folder} ({counts.train} training, {counts.eval} val/test image(s))")
        writer(out / folder, counts, divisor)
