"""scripts/make_dataset_tree.py: the trees the real loaders read — files, sizes, pairings, label values —
and its refusals (a non-empty root, an unknown dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refign.data.datasets.acdc import ACDC
from refign.data.datasets.bdd100k_night import BDD100kNight
from refign.data.datasets.cityscapes import Cityscapes
from refign.data.datasets.dark_zurich import DarkZurich, read_pairs
from refign.data.datasets.nighttime_driving import NighttimeDriving
from refign.data.datasets.robotcar import ID_TO_TRAINID, RobotCar, read_correspondence
from refign.data.synthetic.trees import TreeError, write_tree
from scripts import make_dataset_tree

DIVISOR = 8  # every side / 8: the same code as the full-size trees, in a few seconds
TRAIN_IDS = set(range(19)) | {255}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_tree(
        root, list(make_dataset_tree.WRITERS), images=2, divisor=DIVISOR, eval_images=1, log=lambda _: None
    )
    return root


def size(path: Path) -> tuple[int, int]:
    w, h = Image.open(path).size
    return h, w


def values(path: Path) -> set[int]:
    return set(np.unique(np.asarray(Image.open(path))).tolist())


@pytest.mark.parametrize(
    "cls,folder,split,keys,count,native",
    [
        (Cityscapes, "Cityscapes", "train", ("image", "semantic"), 2, (1024, 2048)),
        (Cityscapes, "Cityscapes", "val", ("image", "semantic"), 1, (1024, 2048)),
        (ACDC, "ACDC", "train", ("image", "image_ref", "semantic"), 8, (1080, 1920)),
        (ACDC, "ACDC", "val", ("image", "image_ref", "semantic"), 4, (1080, 1920)),
        (ACDC, "ACDC", "test", ("image", "image_ref"), 4, (1080, 1920)),
        (DarkZurich, "DarkZurich", "train", ("image", "image_ref"), 2, (1080, 1920)),
        (DarkZurich, "DarkZurich", "val", ("image", "image_ref", "semantic"), 1, (1080, 1920)),
        (DarkZurich, "DarkZurich", "test", ("image", "image_ref"), 1, (1080, 1920)),
        (NighttimeDriving, "NighttimeDrivingTest", "test", ("image", "semantic"), 1, (1080, 1920)),
        (BDD100kNight, "bdd100k", "test", ("image", "semantic"), 87, (720, 1280)),
        (RobotCar, "RobotCar", "train", ("image", "image_ref"), 2, (1024, 1024)),
        (RobotCar, "RobotCar", "val", ("image", "semantic"), 1, (1024, 1024)),
        (RobotCar, "RobotCar", "test", ("image", "semantic"), 1, (1024, 1024)),
    ],
)
def test_every_loader_reads_its_split_at_the_native_size(tree, cls, folder, split, keys, count, native):
    ds = cls(tree / folder, split, load_keys=keys)  # the loader checks every pairing up front
    assert len(ds) == count
    expected = (native[0] // DIVISOR, native[1] // DIVISOR)
    for entry in ds.entries:
        for key in keys:
            assert size(getattr(entry, key)) == expected, getattr(entry, key)
    if "semantic" in keys:
        for i in range(len(ds)):
            label = ds.load_label(i)  # RobotCar: label ids mapped to train ids
            assert set(np.unique(label).tolist()) <= TRAIN_IDS and len(np.unique(label)) >= 4


def test_references_are_the_clear_view_of_the_same_scene(tree):
    """A night target is darker than its day reference; fog, rain and snow are not night."""
    ds = ACDC(tree / "ACDC", "train", load_keys=("image", "image_ref"))
    for entry in ds.entries:
        target, ref = (np.asarray(Image.open(p), np.float32).mean() for p in (entry.image, entry.image_ref))
        if entry.condition == "night":
            assert target < 0.6 * ref, entry.image
        else:
            assert target > 0.4 * ref, entry.image


def test_dark_zurich_pairs_and_robotcar_correspondences_name_written_files(tree):
    pairs = read_pairs(tree / "DarkZurich" / "zurich_dn_pair_train.csv")
    assert len(pairs) == 2
    for night, day in pairs:
        assert night.startswith("train/night/") and day.startswith("train/day/")
        assert (tree / "DarkZurich" / "rgb_anon" / f"{day}_rgb_anon.png").is_file()
    mats = sorted((tree / "RobotCar" / "correspondence_data").glob("*.mat"))
    assert len(mats) == 2
    for mat in mats:
        ref, target = read_correspondence(mat)
        assert ref.startswith("overcast-reference/") and not target.startswith("overcast-reference/")
        assert (tree / "RobotCar" / "images" / ref).is_file() and (
            tree / "RobotCar" / "images" / target
        ).is_file()


def test_label_files_hold_train_ids_except_robotcar_label_ids(tree):
    for path in (tree / "ACDC" / "gt").rglob("*.png"):
        assert values(path) <= TRAIN_IDS
    for path in (tree / "RobotCar" / "segmented_images").rglob("annos/*.png"):
        assert values(path) <= set(ID_TO_TRAINID) | {0}
        assert 7 in values(path)  # road is label id 7, train id 0


def test_a_non_empty_root_is_refused_untouched(tmp_path, capsys):
    keep = tmp_path / "ACDC" / "mine.txt"
    keep.parent.mkdir()
    keep.write_text("data")
    assert make_dataset_tree.main([str(tmp_path), "--datasets", "acdc"]) == 2
    assert "is not empty; pass --overwrite" in capsys.readouterr().err
    assert keep.read_text() == "data" and [p.name for p in tmp_path.rglob("*")] == ["ACDC", "mine.txt"]


def test_overwrite_replaces_only_the_named_datasets(tmp_path):
    other = tmp_path / "Mine" / "keep.txt"
    other.parent.mkdir()
    other.write_text("x")
    write_tree(tmp_path, ["nighttime_driving"], 1, overwrite=True, divisor=DIVISOR, log=lambda _: None)
    assert other.read_text() == "x"
    assert len(list((tmp_path / "NighttimeDrivingTest").rglob("*.png"))) == 2


def test_unknown_dataset_names_are_an_error():
    with pytest.raises(TreeError, match=r"unknown dataset\(s\) \['acdcc'\]; choose from \['cityscapes'"):
        write_tree(Path("unused"), ["acdc", "acdcc"], 1)
