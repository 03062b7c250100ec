"""Tiny fixture trees with the real layouts and file names (8×16 PNGs), shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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
                rec, name = f"GOPR04{i % 2}5", f"GOPR04{i % 2}5_frame_{100 * c + i:06d}"
                value = 10 * i + len(cond)
                png(root / "rgb_anon" / cond / split / rec / f"{name}_rgb_anon.png", value)
                png(root / "rgb_anon" / cond / f"{split}_ref" / rec / f"{name}_rgb_ref_anon.png", value + 100)
                if split != "test":
                    png(root / "gt" / cond / split / rec / f"{name}_gt_labelTrainIds.png", i % 19, "L")
    return root


def cityscapes(root: Path, n: dict[str, int] | None = None) -> Path:
    for split, count in (n or {"train": 3, "val": 2, "test": 1}).items():
        for i in range(count):
            city = ("aachen", "bremen")[i % 2]
            stem = f"{city}_{i:06d}_000019"
            png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", i)
            png(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", i, "L")
    return root


def dark_zurich(root: Path, n_train: int = 3, n_val: int = 2, n_test: int = 2) -> Path:
    rows = []
    for i in range(n_train):
        night, day = (
            f"train/night/GOPR0351/GOPR0351_frame_{i:06d}",
            f"train/day/GOPR0345/GOPR0345_frame_{i // 2:06d}",
        )
        png(root / "rgb_anon" / f"{night}_rgb_anon.png", i)
        png(root / "rgb_anon" / f"{day}_rgb_anon.png", 100 + i // 2)
        rows.append(f"{night},{day}")
    (root / "zurich_dn_pair_train.csv").write_text("\n".join(rows) + "\n")
    for split, count in (("val", n_val), ("test", n_test)):
        for i in range(count):
            rec, name = "GOPR0356", f"GOPR0356_frame_{i:06d}"
            png(root / "rgb_anon" / split / "night" / rec / f"{name}_rgb_anon.png", i)
            ref = (
                f"{name}_ref_rgb_anon.png" if split == "val" else f"{name}_ref_frame_{i + 7:06d}_rgb_anon.png"
            )
            png(root / "rgb_anon" / f"{split}_ref" / "day" / f"{rec}_ref" / ref, 100 + i)
            if split == "val":
                png(root / "gt" / "val" / "night" / rec / f"{name}_gt_labelTrainIds.png", i, "L")
    return root


def robotcar_labelled(root: Path, n: int = 2) -> Path:
    """Labelled RobotCar with Cityscapes *label ids*: 7 (road) left, 26 (car) right, row 0 = 0 (unlabelled)."""
    for split in ("training", "validation", "testing"):
        for i in range(n):
            name = f"{1418132416737115 + i}.png"
            png(root / "segmented_images" / split / "imgs" / name, i)
            label = np.full((H, W), 7, np.uint8)
            label[:, W // 2 :] = 26
            label[0] = 0
            path = root / "segmented_images" / split / "annos" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(label, "L").save(path)
    return root


def robotcar_pairs(root: Path, pairs: list[tuple[str, str]]) -> Path:
    """RobotCar Seasons correspondences: ``(reference, target)`` image paths under ``images/`` (red level
    40 + 100·k and 90 + 100·k), one MATLAB v7.3 (HDF5) file per pair holding the paths as character codes."""
    import h5py

    (root / "correspondence_data").mkdir(parents=True, exist_ok=True)
    for k, (ref, trg) in enumerate(pairs):
        for rel, value in ((ref, 40 + 100 * k), (trg, 90 + 100 * k)):
            png(root / "images" / rel, value)
        with h5py.File(root / "correspondence_data" / f"pair_{k:04d}.mat", "w") as f:
            f["im_i_path"] = np.array([[ord(c)] for c in ref], np.uint16)
            f["im_j_path"] = np.array([[ord(c)] for c in trg], np.uint16)
    return root


def nighttime_driving(root: Path, n: int = 2) -> Path:
    for i in range(n):
        stem = f"0_frame_{i:04d}"
        png(root / "leftImg8bit" / "test" / "night" / f"{stem}_leftImg8bit.png", i)
        png(
            root / "gtCoarse_daytime_trainvaltest" / "test" / "night" / f"{stem}_gtCoarse_labelTrainIds.png",
            i,
            "L",
        )
    return root


def bdd100k(root: Path, names: list[str]) -> Path:
    """BDD100k files for the given list entries ``seg/images/<split>/<id>.jpg``."""
    for i, item in enumerate(names):
        split, stem = item.split("/")[-2], Path(item).stem
        path = root / "images" / "10k" / split / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), i, np.uint8)).save(path)
        png(root / "labels" / "sem_seg" / "masks" / split / f"{stem}.png", i % 19, "L")
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
