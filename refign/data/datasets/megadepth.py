"""Matching data: MegaDepth training/validation pairs (D2-Net scene info) and RANSAC-Flow csv test sets
(MegaDepth test1600, RobotCar test6511), laid out as in docs/uawarpc.md#matching-data."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from refign.data.io import DatasetError, open_image, require_dir
from refign.utils.imaging import normalize
from refign.utils.safe_load import load_npz

log = logging.getLogger(__name__)
# the official validation scenes (data_modules/datasets/lists/validation_scenes_MegaDepth.txt)
VAL_SCENES = ["0121", "0168", "0175", "0178", "0181", "0185", "0186", "0217", "0223", "0229", "0271", "0285", "0286", "0294", "0303", "0349", "0387", "0412", "0443", "0482", "0768", "1001", "3346", "5014", "5018"]  # fmt: skip
PAIR_SEED = 400


def to_tensor(img: Image.Image) -> torch.Tensor:
    return normalize(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0)


def resize_with_points(
    img: Image.Image, pts: np.ndarray, size_hw: Sequence[int]
) -> tuple[Image.Image, np.ndarray]:
    """LANCZOS resize to (h, w), scaling (x, y) points by the per-axis factors."""
    w0, h0 = img.size
    h, w = int(size_hw[0]), int(size_hw[1])
    return img.resize((w, h), Image.LANCZOS), pts * np.array([w / w0, h / h0], dtype=np.float64)


def short_side_size(img: Image.Image, short: int) -> tuple[int, int]:
    """(h, w) with the shorter side = ``short`` and the longer = int(short·long/short_old) (truncation)."""
    w, h = img.size
    return (short, int(short * w / h)) if h <= w else (int(short * h / w), short)


class MegaDepthPairs(Dataset):
    """MegaDepth pairs with 0.3 < overlap ≤ 1 from ``<root>/scene_info/<scene>.0.npz``.

    Item (i, j): ``image_ref`` = image i, ``image`` = image j, both resized to ``dims`` (aspect not kept),
    plus ``corr_pts_ref`` / ``corr_pts`` (x, y) = 3-D points observed in both images.

    Args:
        root: MegaDepth root (image paths in the npz files are relative to it).
        split: ``train`` or ``val``.
        scenes: scene ids; None = the official validation list for ``val`` and every other scene with an
            npz file for ``train`` (the official 150-scene training list is not shipped here).
        num_per_scene: pairs sampled per scene (official: train 300, val 25).
        length: reported length (official train: 30,000); None = number of sampled pairs.
        dims: (h, w) both images are resized to.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        scenes: Sequence[str] | None = None,
        num_per_scene: int | None = None,
        length: int | None = None,
        dims: Sequence[int] = (750, 750),
    ) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"MegaDepthPairs: split must be 'train' or 'val', got {split!r}")
        self.root, self.dims = Path(root), tuple(dims)
        info_dir = self.root / "scene_info"
        require_dir(info_dir, "MegaDepth scene info")
        available = sorted(p.name.split(".")[0] for p in info_dir.glob("*.0.npz"))
        if not available:
            raise DatasetError(f"MegaDepth scene info: no <scene>.0.npz file in {info_dir}")
        if scenes is None:
            scenes = VAL_SCENES if split == "val" else [s for s in available if s not in VAL_SCENES]
        num_per_scene = num_per_scene or (300 if split == "train" else 25)
        rng = np.random.RandomState(PAIR_SEED)
        self.items: list[tuple[str, str, dict, dict]] = []
        for scene in scenes:
            path = info_dir / f"{scene}.0.npz"
            if not path.exists():  # missing scenes are skipped, as in the official loader
                continue
            self.items += self._scene_pairs(path, num_per_scene, rng)
        if not self.items:
            raise DatasetError(f"MegaDepth {split}: no pair with 0.3 < overlap <= 1 in {info_dir}")
        rng.shuffle(self.items)
        self.length = min(length, len(self.items)) if length else len(self.items)
        if length and length > len(self.items):
            log.warning(
                "MegaDepth %s: %d pairs sampled, fewer than length=%d", split, len(self.items), length
            )

    @staticmethod
    def _scene_pairs(path: Path, num: int, rng: np.random.RandomState) -> list:
        try:
            info = load_npz(path, ["image_paths", "depth_paths", "points3D_id_to_2D", "overlap_matrix"])
            image_paths, depth_paths = info["image_paths"], info["depth_paths"]
            points, overlap = info["points3D_id_to_2D"], info["overlap_matrix"]
        except (OSError, KeyError, ValueError) as err:
            raise DatasetError(f"cannot read MegaDepth scene info {path}: {err}") from err
        keep = np.array(
            [i for i in range(len(image_paths)) if image_paths[i] is not None and depth_paths[i] is not None]
        )
        if len(keep) < 2:
            return []
        sub = overlap[keep][:, keep]
        ii, jj = np.where((sub > 0.3) & (sub <= 1.0))
        pairs = np.stack([keep[ii], keep[jj]], 1)
        if len(pairs) > num:
            pairs = pairs[rng.choice(len(pairs), num, replace=False)]
        return [(image_paths[i], image_paths[j], points[i], points[j]) for i, j in pairs]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        path_i, path_j, pts_i, pts_j = self.items[index]
        common = sorted(set(pts_i) & set(pts_j))
        xy_i = np.array([pts_i[k] for k in common], dtype=np.float64).reshape(-1, 2)
        xy_j = np.array([pts_j[k] for k in common], dtype=np.float64).reshape(-1, 2)
        img_i, xy_i = resize_with_points(open_image(self.root / path_i, "RGB"), xy_i, self.dims)
        img_j, xy_j = resize_with_points(open_image(self.root / path_j, "RGB"), xy_j, self.dims)
        return {
            "image_ref": to_tensor(img_i),
            "image": to_tensor(img_j),
            "corr_pts_ref": torch.from_numpy(xy_i).float(),
            "corr_pts": torch.from_numpy(xy_j).float(),
        }


class CorrespondenceCsv(Dataset):
    """RANSAC-Flow style test pairs: csv columns scene, source_image, target_image, XA, YA (source points),
    XB, YB (target points), ';'-separated. ``image_ref`` = source, ``image`` = target.

    Args:
        root: folder holding the csv and the image folder.
        csv_name: csv file name (``test1600Pairs.csv`` for MegaDepth, ``test6511.csv`` for RobotCar).
        image_dir: image folder; images at ``<image_dir>/<scene>/<file>`` (scene '/' = no sub-folder).
        short_side: each image is resized so that its shorter side is this (official: 480).
        dims: optional (h, w) resize before that (RobotCar's official default 1024×1024 → 480×480 pairs).
    """

    COLUMNS = ("scene", "source_image", "target_image", "XA", "YA", "XB", "YB")

    def __init__(
        self,
        root: str | os.PathLike,
        csv_name: str,
        image_dir: str,
        short_side: int = 480,
        dims: Sequence[int] | None = None,
    ) -> None:
        self.root, self.image_dir = Path(root), Path(root) / image_dir
        self.short_side, self.dims = short_side, tuple(dims) if dims else None
        self.csv_path = path = self.root / csv_name
        if not path.is_file():
            raise DatasetError(f"correspondence csv not found: {path}")
        require_dir(self.image_dir, f"images of {path.name}")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = set(self.COLUMNS) - set(rows[0] if rows else ())
        if missing:
            raise DatasetError(f"{path}: missing columns {sorted(missing)}")
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, scene: str, name: str) -> Path:
        """Where a row's image is: ``<image_dir>/<scene>/<name>``, or ``<image_dir>/<name>`` for scene '/'."""
        return (self.image_dir if scene.strip() in ("/", ".", "") else self.image_dir / scene) / name

    def _load(self, scene: str, name: str, xs: str, ys: str) -> tuple[torch.Tensor, torch.Tensor]:
        img = open_image(self.image_path(scene, name), "RGB")
        pts = np.stack(
            [np.array(xs.split(";"), dtype=np.float64), np.array(ys.split(";"), dtype=np.float64)], 1
        )
        if self.dims:
            img, pts = resize_with_points(img, pts, self.dims)
        img, pts = resize_with_points(img, pts, short_side_size(img, self.short_side))
        return to_tensor(img), torch.from_numpy(pts).float()

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        ref, pts_ref = self._load(row["scene"], row["source_image"], row["XA"], row["YA"])
        trg, pts_trg = self._load(row["scene"], row["target_image"], row["XB"], row["YB"])
        return {"image_ref": ref, "image": trg, "corr_pts_ref": pts_ref, "corr_pts": pts_trg}
