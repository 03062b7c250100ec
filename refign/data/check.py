"""Checking a dataset on disk (``python -m refign.check_data``): images found against the official counts,
references and labels paired, image sizes, label values and unreadable files, each problem with its file.

Only headers are read by default (``PIL.Image.open`` parses the header and defers decoding), so a full
dataset is checked in seconds; labels are decoded for their values unless switched off, and ``decode``
decodes every image too (the only way to find a file cut short after its header).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from refign.data.classes import IGNORE_INDEX, NUM_CLASSES
from refign.data.datasets.base import FolderDataset
from refign.data.io import DatasetError
from refign.utils.progress import progress_bar
from refign.utils.safe_load import load_npz

# Images per split and condition as the datasets publish them.
#   Cityscapes: cityscapes-dataset.com/dataset-overview (gtFine: 2975 train, 500 val, 1525 test).
#   ACDC: Sakaridis et al., ICCV 2021, Table 1 and acdc.vision.ee.ethz.ch/overview: 4006 images, per
#     condition 400 train / 100 val (night: 106) / 500 test, every one with its reference image.
#   Dark Zurich: Sakaridis et al., ICCV 2019 and the dataset's README: 2416 night training images (the
#     official Refign pairing list zurich_dn_pair_train.csv has one line per image), 50 val and 151 test
#     night images, each with a day reference.
#   Nighttime Driving test: Dai & Van Gool, ITSC 2018: 50 coarsely annotated night images.
#   BDD100k-night: the 87 lines of the official Refign list (refign/data/lists/bdd100k_night.txt).
#   RobotCar for Segmentation publishes no per-split count with its files: found counts are reported only.
OFFICIAL_COUNTS: dict[tuple[str, str], dict[str, int]] = {
    ("Cityscapes", "train"): {"day": 2975},
    ("Cityscapes", "val"): {"day": 500},
    ("Cityscapes", "test"): {"day": 1525},
    ("ACDC", "train"): {"fog": 400, "night": 400, "rain": 400, "snow": 400},
    ("ACDC", "val"): {"fog": 100, "night": 106, "rain": 100, "snow": 100},
    ("ACDC", "test"): {"fog": 500, "night": 500, "rain": 500, "snow": 500},
    ("DarkZurich", "train"): {"night": 2416},
    ("DarkZurich", "val"): {"night": 50},
    ("DarkZurich", "test"): {"night": 151},
    ("NighttimeDriving", "test"): {"night": 50},
    ("BDD100kNight", "test"): {"night": 87},
}
# RANSAC-Flow's matching test sets: one csv row per pair (the csv names say how many)
OFFICIAL_PAIRS = {"test1600Pairs.csv": 1600, "test6511.csv": 6511}

TRAIN_IDS = frozenset(range(NUM_CLASSES)) | {IGNORE_INDEX}
# RobotCar stores Cityscapes *label ids* (0..33; 255 where a -1 id was written), mapped to train ids on load
STORED_LABEL_VALUES = {"RobotCar": frozenset(range(34)) | {255}}
ALL = "all"  # the condition name of a dataset without conditions
KINDS = ("missing", "unreadable", "size", "labels", "count")  # of problems, in the summary's order


@dataclass(frozen=True)
class Problem:
    """One thing wrong, with the file or folder it concerns in ``message``."""

    kind: str  # one of KINDS
    message: str

    def __str__(self) -> str:
        return f"  {self.kind:<10} {self.message}"


@dataclass
class Report:
    """What one split holds: images per condition against the official counts, paired files, sizes."""

    title: str
    found: dict[str, int] = field(default_factory=dict)
    unit: str = "images"  # what ``found`` counts
    expected: dict[str, int] | None = None
    paired: dict[str, list[int]] = field(default_factory=dict)  # key -> [present, listed]
    sizes: Counter = field(default_factory=Counter)  # (H, W) of the images
    problems: list[Problem] = field(default_factory=list)

    @property
    def images(self) -> int:
        return sum(self.found.values()) if self.unit == "images" else 0

    def lines(self) -> list[str]:
        conds = []
        for cond in dict.fromkeys([*(self.expected or {}), *self.found]):
            n, want = self.found.get(cond, 0), (self.expected or {}).get(cond)
            conds.append(f"{cond} {n}" + (f"/{want}" if want is not None else ""))
        pairs = [f"{key} {n}/{m}" for key, (n, m) in self.paired.items()]
        sizes = ", ".join(f"{h}×{w} ×{n}" for (h, w), n in self.sizes.most_common(3))
        sizes += ", …" * (len(self.sizes) > 3)
        status = "OK" if not self.problems else f"{len(self.problems)} problem(s)"
        head = f"{self.title}: {self.unit} {', '.join(conds) or 'none'}"
        head += f"; {', '.join(pairs)}" * bool(pairs) + f"; sizes {sizes}" * bool(sizes) + f" — {status}"
        return [head, *map(str, self.problems)]


def summary(reports: Sequence[Report], seconds: float) -> str:
    """The one line that ends the check."""
    problems = [p for r in reports for p in r.problems]
    kinds = Counter(p.kind for p in problems)
    images = sum(r.images for r in reports)
    text = f"check_data: {len(reports)} split(s), {images} images, checked in {seconds:.1f} s: "
    if not problems:
        return text + "nothing missing or broken"
    return (
        text + f"{len(problems)} problem(s) (" + ", ".join(f"{kinds[k]} {k}" for k in KINDS if kinds[k]) + ")"
    )


@dataclass(frozen=True)
class FileCheck:
    """How deep to look at each file."""

    decode: bool = False  # decode every image (headers only otherwise)
    label_values: bool = True  # decode labels and check their values
    workers: int = 8  # threads: PIL releases the GIL while it reads and decodes


Inspected = tuple[tuple[int, int] | None, Problem | None]  # (H, W) of a file, or the problem with it
T = TypeVar("T")


def inspect(path: Path, check: FileCheck, allowed: frozenset[int] | None) -> Inspected:
    """``(H, W)`` of one file from its header, or the problem with it; ``allowed``: a label's values."""
    if not path.is_file():
        return None, Problem("missing", f"{path}: file not found")
    try:
        with Image.open(path) as img:
            size = (img.height, img.width)
            if allowed is not None and img.mode not in ("L", "P", "I", "I;16"):
                return size, Problem("labels", f"{path}: mode {img.mode}, expected one channel of ids")
            if check.decode or (allowed is not None and check.label_values):
                img.load()
            if allowed is not None and check.label_values:
                values = set(np.unique(np.asarray(img)).tolist())
                if values - allowed:
                    bad = sorted(values - allowed)
                    return size, Problem("labels", f"{path}: values {bad[:8]} outside the train ids")
    except (OSError, SyntaxError, ValueError) as err:
        return None, Problem("unreadable", f"{path}: {err}")
    return size, None


def inspect_all(
    jobs: Sequence[T], look: Callable[[T], Inspected], check: FileCheck, title: str
) -> Iterator[tuple[T, Inspected]]:
    """``(job, look(job))`` for every job, in order, looked at by ``check.workers`` threads under one
    progress bar (kept off the screen once done: the report says what was found)."""
    with ThreadPoolExecutor(check.workers) as pool:
        results = pool.map(look, jobs)
        yield from progress_bar(
            zip(jobs, results, strict=True),
            total=len(jobs),
            desc=title,
            leave=False,
            mininterval=1,
            disable=None,
        )


def check_folder_split(
    cls: type[FolderDataset],
    split: str,
    listing: Callable[[Sequence[str] | None], FolderDataset],
    check: FileCheck,
    keys: Sequence[str] | None = None,
    expected: dict[str, int] | None = None,
    title: str | None = None,
) -> Report:
    """One split of a real dataset. ``listing(conditions)`` lists it (without the loader's pairing check)
    for the given conditions, one condition at a time so that a missing condition folder does not hide the
    others' counts; ``keys``: the files to check per sample (default: all the split offers)."""
    report = Report(
        title or f"{cls.name} {split}", expected=expected or OFFICIAL_COUNTS.get((cls.name, split))
    )
    keys = tuple(keys or cls.offered_keys(split))
    entries = []
    for cond in cls.conditions if len(cls.conditions) > 1 else [None]:
        name = cond or (cls.conditions[0] if cls.conditions else ALL)
        try:
            listed = listing(None if cond is None else [cond]).entries
        except DatasetError as err:  # a missing root is reported once, not once per condition
            if Problem("missing", str(err)) not in report.problems:
                report.problems.append(Problem("missing", str(err)))
            listed = []
        report.found[name] = 0  # counted below: list-based datasets list files that may be absent
        entries += [(name, e) for e in listed]
    labels = STORED_LABEL_VALUES.get(cls.name, TRAIN_IDS)
    jobs = [(key, cond, e) for cond, e in entries for key in keys if getattr(e, key) is not None]
    for key in keys[1:]:
        report.paired[{"semantic": "labels", "image_ref": "references"}[key]] = [0, 0]

    def look(job: tuple) -> Inspected:
        key, _, entry = job
        return inspect(getattr(entry, key), check, labels if key == "semantic" else None)

    sizes: dict[Path, tuple[int, int]] = {}
    off_size: dict[tuple[int, int], Path] = {}  # size → first image at that size, other than the native one
    for (key, cond, entry), (size, problem) in inspect_all(jobs, look, check, report.title):
        if problem:
            report.problems.append(problem)
        if key == "image":
            sizes[entry.image] = size
            if size:
                report.found[cond] += 1
                report.sizes[size] += 1
                if size != tuple(cls.orig_dims):
                    off_size.setdefault(size, entry.image)
            continue
        counter = report.paired["labels" if key == "semantic" else "references"]
        counter[1] += 1
        counter[0] += size is not None
        mine = sizes.get(entry.image)
        if size and mine and size != mine:
            message = (
                f"{getattr(entry, key)}: {size[0]}×{size[1]}, its image {entry.image} is {mine[0]}×{mine[1]}"
            )
            report.problems.append(Problem("size", message))
    for (h, w), first in off_size.items():
        report.problems.append(
            Problem(
                "size",
                f"{first}: {h}×{w}, native is {cls.orig_dims[0]}×{cls.orig_dims[1]} "
                f"({report.sizes[(h, w)]} image(s) of this size)",
            )
        )
    report.problems += count_problems(report, entries)
    return report


def count_problems(report: Report, entries: Iterable[tuple[str, object]]) -> list[Problem]:
    """Fewer or more images per condition than the official count, naming the folder they were listed in
    (a condition with no folder at all is already reported by the listing)."""
    out = []
    folders: dict[str, list[str]] = {}
    for cond, e in entries:
        folders.setdefault(cond, []).append(str(e.image.parent.parent))
    for cond, want in (report.expected or {}).items():
        n = report.found.get(cond, 0)
        if n != want and cond in folders:
            folder = os.path.commonpath(folders[cond])
            word = "missing" if n < want else "extra"
            out.append(Problem("count", f"{folder}: {n} of {want} {cond} images ({abs(want - n)} {word})"))
    return out


def check_synthetic(title: str, dataset) -> Report:
    """A split of the embedded synthetic benchmark (generated, or read from its cache): the configured
    number of samples, their size, label values, and the references and flow of target samples."""
    n, size = len(dataset), tuple(dataset.size)
    cond = Counter(dataset.condition(i) for i in range(n))
    report = Report(title, found=dict(cond), expected=dict(cond))
    arrays = dataset.arrays
    report.sizes[tuple(arrays["image"].shape[1:3])] = len(arrays["image"])
    if len(arrays["image"]) != n or tuple(arrays["image"].shape[1:3]) != size:
        report.problems.append(
            Problem("count", f"{title}: arrays {arrays['image'].shape}, configured {n} images of {size}")
        )
    bad = set(np.unique(arrays["semantic"]).tolist()) - TRAIN_IDS
    if bad:
        report.problems.append(Problem("labels", f"{title}: values {sorted(bad)[:8]} outside the train ids"))
    if dataset.domain == "target":
        for key in ("image_ref", "flow", "flow_valid"):
            report.paired[key] = [len(arrays.get(key, ())), n]
            if len(arrays.get(key, ())) != n:
                report.problems.append(
                    Problem("missing", f"{title}: {key} for {len(arrays.get(key, ()))} of {n}")
                )
    return report


def check_pairs_csv(title: str, dataset, check: FileCheck) -> Report:
    """A RANSAC-Flow matching test set (``CorrespondenceCsv``): rows against the official count, and every
    image it names."""
    want = OFFICIAL_PAIRS.get(dataset.csv_path.name)
    report = Report(title, expected={"csv rows": want} if want else None, unit="pairs")
    paths = [
        dataset.image_path(r["scene"], r[k]) for r in dataset.rows for k in ("source_image", "target_image")
    ]
    paths = list(dict.fromkeys(paths))
    report.paired["images"] = [0, len(paths)]
    for _, (size, problem) in inspect_all(paths, lambda p: inspect(p, check, None), check, title):
        if size:
            report.paired["images"][0] += 1
            report.sizes[size] += 1
        report.problems += [problem] if problem else []
    report.found["csv rows"] = len(dataset.rows)
    if want and want != len(dataset.rows):
        report.problems.append(Problem("count", f"{dataset.csv_path}: {len(dataset.rows)} of {want} pairs"))
    return report


def check_megadepth_scenes(title: str, root: Path, val_scenes: Sequence[str]) -> Report:
    """MegaDepth's D2-Net scene info: one ``<scene>.0.npz`` per scene (the official validation scenes among
    them) and every image it lists present; only the ``image_paths`` member of each file is read."""
    report = Report(title, unit="scenes")
    info = Path(root) / "scene_info"
    files = sorted(info.glob("*.0.npz")) if info.is_dir() else []
    if not files:
        report.problems.append(Problem("missing", f"{info}: no <scene>.0.npz scene info"))
        return report
    scenes = {p.name.split(".")[0] for p in files}
    report.found = {"all": len(files), "official validation": len(scenes & set(val_scenes))}
    report.expected = {"official validation": len(val_scenes)}
    for scene in sorted(set(val_scenes) - scenes):
        report.problems.append(Problem("missing", f"{info / f'{scene}.0.npz'}: official validation scene"))
    listed = present = 0
    for path in progress_bar(files, desc=title, leave=False, mininterval=1, disable=None):
        try:
            images = [p for p in load_npz(path, ["image_paths"])["image_paths"] if p is not None]
        except (OSError, KeyError, ValueError) as err:
            report.problems.append(Problem("unreadable", f"{path}: {err}"))
            continue
        for rel in images:
            listed += 1
            if (Path(root) / rel).is_file():
                present += 1
            else:
                report.problems.append(Problem("missing", f"{Path(root) / rel}: listed in {path.name}"))
    report.paired["images"] = [present, listed]
    return report
