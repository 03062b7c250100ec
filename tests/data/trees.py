"""Tiny fixture trees (8×16 PNGs) at the paths the loaders' layouts give, shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from refign.data.datasets.acdc import ACDC
from refign.data.datasets.bdd100k_night import BDD100kNight
from refign.data.datasets.cityscapes import Cityscapes
from refign.data.datasets.dark_zurich import PAIRS_CSV, TRAIN_PAIRS, DarkZurich
from refign.data.datasets.nighttime_driving import NighttimeDriving
from refign.data.datasets.robotcar import CORRESPONDENCES, IMAGES, SPLIT_DIRS, RobotCar
from refign.data.synthetic.trees import write_correspondence

H, W = 8, 16


def png(path: Path, value: int, mode: str = "RGB") -> Path:
    """An 8×16 PNG; RGB images encode ``value`` in the red channel and the column in green, labels hold
    ``value`` in the left half and ``value + 1`` (mod 19) in the right half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        arr = np.zeros((H, W, 3), np.uint8)
        arr[..., 0] = value
        arr[..., 1] = np.arange(W, dtype=np.uint8) * 10
        arr[..., 2] = np.arange(H, dtype=np.uint8)[:, None] * 20
    else:
        arr = np.full((H, W), value, np.uint8)
        arr[:, W // 2 :] = (value + 1) % 19
    Image.fromarray(arr, mode).save(path)
    return path


def acdc(root: Path, per_condition: dict[str, int] | None = None) -> Path:
    """ACDC: ``per_condition`` images in train, val and test of every condition, two recordings."""
    counts = per_condition or {"fog": 2, "night": 3, "rain": 1, "snow": 2}
    for c, (cond, n) in enumerate(counts.items()):
        for split in ("train", "val", "test"):
            for i in range(n):  # names are unique across conditions, as in ACDC
                rec = f"GOPR04{i % 2}5"
                fields = {
                    "condition": cond,
                    "split": split,
                    "recording": rec,
                    "name": f"{rec}_frame_{100 * c + i:06d}",
                }
                value = 10 * i + len(cond)
                png(ACDC.layout.path(root, "image", **fields), value)
                png(ACDC.layout.path(root, "image_ref", **fields), value + 100)
                if split != "test":
                    png(ACDC.layout.path(root, "semantic", **fields), i % 19, "L")
    return root


def cityscapes(root: Path, n: dict[str, int] | None = None) -> Path:
    for split, count in (n or {"train": 3, "val": 2, "test": 1}).items():
        for i in range(count):
            city = ("aachen", "bremen")[i % 2]
            fields = {"split": split, "city": city, "name": f"{city}_{i:06d}_000019"}
            png(Cityscapes.layout.path(root, "image", **fields), i)
            png(Cityscapes.layout.path(root, "semantic", **fields), i, "L")
    return root


def dark_zurich(root: Path, n_train: int = 3, n_val: int = 2, n_test: int = 2) -> Path:
    rows = []
    for i in range(n_train):
        night, day = (
            f"train/night/GOPR0351/GOPR0351_frame_{i:06d}",
            f"train/day/GOPR0345/GOPR0345_frame_{i // 2:06d}",
        )
        png(TRAIN_PAIRS.path(root, "image", night=night), i)
        png(TRAIN_PAIRS.path(root, "image_ref", day=day), 100 + i // 2)
        rows.append(f"{night},{day}")
    (root / PAIRS_CSV).write_text("\n".join(rows) + "\n")
    for split, count in (("val", n_val), ("test", n_test)):
        for i in range(count):
            fields = {"split": split, "recording": "GOPR0356", "name": f"GOPR0356_frame_{i:06d}"}
            png(DarkZurich.layout.path(root, "image", **fields), i)
            ref = DarkZurich.layout.path(root, "image_ref", **fields)
            if split == "test":  # test references carry the reference's own frame number
                ref = ref.with_name(f"{fields['name']}_ref_frame_{i + 7:06d}_rgb_anon.png")
            png(ref, 100 + i)
            if split == "val":
                png(DarkZurich.layout.path(root, "semantic", **fields), i, "L")
    return root


def robotcar_labelled(root: Path, n: int = 2) -> Path:
    """Labelled RobotCar with Cityscapes *label ids*: 7 (road) left, 26 (car) right, row 0 = 0 (unlabelled)."""
    for split in SPLIT_DIRS.values():
        for i in range(n):
            fields = {"split": split, "name": f"{1418132416737115 + i}.png"}
            png(RobotCar.layout.path(root, "image", **fields), i)
            label = np.full((H, W), 7, np.uint8)
            label[:, W // 2 :] = 26
            label[0] = 0
            path = RobotCar.layout.path(root, "semantic", **fields)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label, "L").save(path)
    return root


def robotcar_pairs(root: Path, pairs: list[tuple[str, str]]) -> Path:
    """RobotCar Seasons correspondences: ``(reference, target)`` image paths under ``images/`` (red level
    40 + 100·k and 90 + 100·k), one correspondence file per pair."""
    for k, (ref, trg) in enumerate(pairs):
        for rel, value in ((ref, 40 + 100 * k), (trg, 90 + 100 * k)):
            png(root / IMAGES / rel, value)
        write_correspondence(CORRESPONDENCES.path(root, "image", pair=f"pair_{k:04d}"), ref, trg)
    return root


def nighttime_driving(root: Path, n: int = 2) -> Path:
    for i in range(n):
        fields = {"split": "test", "folder": "night", "name": f"0_frame_{i:04d}"}
        png(NighttimeDriving.layout.path(root, "image", **fields), i)
        png(NighttimeDriving.layout.path(root, "semantic", **fields), i, "L")
    return root


def bdd100k(root: Path, names: list[str]) -> Path:
    """BDD100k files for the given list entries ``seg/images/<split>/<id>.jpg``."""
    for i, item in enumerate(names):
        fields = {"split": item.split("/")[-2], "stem": Path(item).stem}
        path = BDD100kNight.layout.path(root, "image", **fields)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), i, np.uint8)).save(path)
        png(BDD100kNight.layout.path(root, "semantic", **fields), i % 19, "L")
    return root


def cityscapes_to_acdc_and_dark_zurich(data: Path) -> Path:
    """Every tree the Cityscapes → ACDC / Dark Zurich configurations read, under ``data`` as under
    ``$REFIGN_DATA_DIR`` (Dark Zurich's test sets include Nighttime Driving and the BDD100k night list)."""
    from refign.data.datasets.bdd100k_night import night_list

    acdc(data / "ACDC")
    cityscapes(data / "Cityscapes")
    dark_zurich(data / "DarkZurich")
    nighttime_driving(data / "NighttimeDrivingTest")
    bdd100k(data / "bdd100k", [str(p) for p in night_list()])
    return data
