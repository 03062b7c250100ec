"""Real-data loaders on tiny fixture trees with the real layouts and names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from refign.data.datasets.acdc import ACDC
from refign.data.datasets.bdd100k_night import BDD100kNight, night_list
from refign.data.datasets.cityscapes import Cityscapes
from refign.data.datasets.dark_zurich import DarkZurich
from refign.data.datasets.nighttime_driving import NighttimeDriving
from refign.data.datasets.robotcar import RobotCar
from refign.data.io import DatasetError
from refign.data.transforms import JointTransform
from refign.utils.imaging import IMAGENET_MEAN, IMAGENET_STD, denormalize
from tests.data import trees


def raw(image: torch.Tensor) -> np.ndarray:
    """Normalised CHW tensor → HWC uint8 as stored."""
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    return np.round((image.numpy().transpose(1, 2, 0) * std + mean) * 255).astype(np.uint8)


def test_acdc_counts_pairing_and_conditions(tmp_path):
    root = trees.acdc(tmp_path / "ACDC")
    ds = ACDC(root, "val", load_keys=("image", "image_ref", "semantic"))
    assert len(ds) == 8 and ds.conditions == ("fog", "night", "rain", "snow")
    assert [s["condition"] for s in ds] == ["fog"] * 2 + ["night"] * 3 + ["rain"] + ["snow"] * 2
    for e in ds.entries:
        assert e.image_ref.parent.parent.name == "val_ref" and e.image_ref.parent.name == e.image.parent.name
        assert e.image_ref.name == e.image.name.replace("_rgb_anon", "_rgb_ref_anon")
    s = ds[4]  # night, recording GOPR0415, i=1 (sorted after GOPR0405 frames 0 and 2)
    assert s["filename"] == "GOPR0415_frame_000101_rgb_anon.png"
    assert raw(s["image"])[0, 0, 0] == 15 and raw(s["image_ref"])[0, 0, 0] == 115
    assert s["semantic"].dtype == torch.int64 and s["semantic"][0, 0] == 1 and s["semantic"][0, -1] == 2
    assert len(ACDC(root, "test", load_keys=("image",))) == 8


def test_acdc_joint_crop_is_identical_for_image_reference_and_label(tmp_path):
    root = trees.acdc(tmp_path / "ACDC", {"fog": 1})
    ACDC.conditions = ("fog",)
    try:
        t = JointTransform(crop_size=(4, 6), flip_p=0.5, rng=np.random.default_rng(3))
        ds = ACDC(root, "train", load_keys=("image", "image_ref", "semantic"), transform=t)
        for _ in range(6):
            s = ds[0]
            img, ref = raw(s["image"]), raw(s["image_ref"])
            assert img.shape == (4, 6, 3) and s["semantic"].shape == (4, 6)
            np.testing.assert_array_equal(img[..., 1:], ref[..., 1:])  # same columns/rows picked and flipped
            left = img[:, :, 1] < 80  # green = 10·column: left half of the original image has label 0
            assert (s["semantic"].numpy()[left] == 0).all() and (s["semantic"].numpy()[~left] == 1).all()
    finally:
        ACDC.conditions = ("fog", "night", "rain", "snow")


def test_load_time_dims_and_image_only_resize(tmp_path):
    root = trees.acdc(tmp_path / "ACDC")
    s = ACDC(root, "val", dims=(4, 8))[0]
    assert s["image"].shape == (3, 4, 8) and s["semantic"].shape == (4, 8)
    s = ACDC(root, "val", dims=(4, 8), resize_labels=False)[0]  # official test stage: labels stay native
    assert s["image"].shape == (3, 4, 8) and s["semantic"].shape == (8, 16)


def test_cityscapes_counts_labels_and_native_load_label(tmp_path):
    root = trees.cityscapes(tmp_path / "Cityscapes")
    assert [
        len(Cityscapes(root, sp, load_keys=keys))
        for sp, keys in (
            ("train", ("image", "semantic")),
            ("val", ("image", "semantic")),
            ("test", ("image",)),
        )
    ] == [3, 2, 1]
    ds = Cityscapes(root, "train", dims=(4, 8))
    assert ds[2]["semantic"].shape == (4, 8) and ds.load_label(2).shape == (
        8,
        16,
    )  # RCS counts at native size
    assert ds[1]["filename"] == "aachen_000002_000019_leftImg8bit.png" and int(ds[1]["semantic"][0, 0]) == 2


def test_dark_zurich_pairs_from_csv_and_val_test_references(tmp_path):
    root = trees.dark_zurich(tmp_path / "DarkZurich")
    train = DarkZurich(root, "train", load_keys=("image", "image_ref"))
    assert len(train) == 3
    assert [raw(train[i]["image_ref"])[0, 0, 0] for i in range(3)] == [100, 100, 101]  # shared day frames
    val = DarkZurich(root, "val", load_keys=("image", "image_ref", "semantic"))
    assert len(val) == 2 and val.entries[1].image_ref.name == "GOPR0356_frame_000001_ref_rgb_anon.png"
    assert int(val[1]["semantic"][0, 0]) == 1
    test = DarkZurich(root, "test", load_keys=("image", "image_ref"))
    assert test.entries[1].image_ref.name == "GOPR0356_frame_000001_ref_frame_000008_rgb_anon.png"
    with pytest.raises(ValueError, match="semantic"):
        DarkZurich(root, "train", load_keys=("image", "semantic"))


def test_dark_zurich_missing_csv_names_it(tmp_path):
    root = trees.dark_zurich(tmp_path / "DarkZurich")
    with pytest.raises(DatasetError, match="nowhere.csv"):
        DarkZurich(root, "train", load_keys=("image", "image_ref"), pairs_csv=str(tmp_path / "nowhere.csv"))


def test_robotcar_label_ids_become_train_ids(tmp_path):
    root = trees.robotcar_labelled(tmp_path / "RobotCar")
    for split in ("train", "val", "test"):
        ds = RobotCar(root, split)
        assert len(ds) == 2 and ds.conditions == ()
    label = RobotCar(root, "test")[0]["semantic"].numpy()
    assert (label[0] == 255).all() and (label[1:, :8] == 0).all() and (label[1:, 8:] == 13).all()
    with pytest.raises(ValueError, match="image_ref"):
        RobotCar(root, "val", load_keys=("image", "image_ref"))


def test_robotcar_correspondences_need_h5py(tmp_path):
    pytest.importorskip("refign")
    root = trees.robotcar_labelled(tmp_path / "RobotCar")
    (root / "correspondence_data").mkdir()
    (root / "correspondence_data" / "pair_0001.mat").write_bytes(b"\x89HDF")
    try:
        import h5py  # noqa: F401
    except ImportError:
        with pytest.raises(DatasetError, match="h5py"):
            RobotCar(root, "train", load_keys=("image", "image_ref"))
    else:
        with pytest.raises(DatasetError, match="pair_0001.mat"):
            RobotCar(root, "train", load_keys=("image", "image_ref"))


def test_nighttime_driving_and_bdd100k_night(tmp_path):
    ds = NighttimeDriving(trees.nighttime_driving(tmp_path / "NighttimeDrivingTest"), "test")
    assert len(ds) == 2 and int(ds[1]["semantic"][0, 0]) == 1
    names = [str(p) for p in night_list()]
    assert len(names) == 87 and sum("/train/" in n for n in names) == 74
    bdd = BDD100kNight(trees.bdd100k(tmp_path / "bdd100k", names), "test")
    assert len(bdd) == 87 and bdd[78]["filename"] == "8fd046f2-93dc0001.jpg"
    assert int(bdd[78]["semantic"][0, 0]) == 78 % 19
    with pytest.raises(ValueError, match="split"):
        BDD100kNight(tmp_path / "bdd100k", "val")


@pytest.mark.parametrize(
    ("make", "cls", "split", "missing"),
    [
        (trees.acdc, ACDC, "val", "rgb_anon/fog/val"),
        (trees.cityscapes, Cityscapes, "val", "leftImg8bit/val"),
        (trees.dark_zurich, DarkZurich, "val", "rgb_anon/val/night"),
        (trees.nighttime_driving, NighttimeDriving, "test", "leftImg8bit/test"),
    ],
)
def test_wrong_layout_names_expected_folder(tmp_path, make, cls, split, missing):
    with pytest.raises(DatasetError, match="does not exist"):
        cls(tmp_path / "absent", split)
    root = make(tmp_path / "root")
    import shutil

    shutil.rmtree(root / missing)
    with pytest.raises(DatasetError, match=missing):
        cls(root, split)


def test_unpaired_reference_and_missing_label_name_the_file(tmp_path):
    root = trees.acdc(tmp_path / "ACDC")
    ref = root / "rgb_anon/night/val_ref/GOPR0405/GOPR0405_frame_000102_rgb_ref_anon.png"
    ref.unlink()
    with pytest.raises(DatasetError, match="GOPR0405_frame_000102_rgb_ref_anon.png"):
        ACDC(root, "val", load_keys=("image", "image_ref"))
    assert len(ACDC(root, "val")) == 8  # references not requested: not needed
    (root / "gt/fog/val/GOPR0415/GOPR0415_frame_000001_gt_labelTrainIds.png").unlink()
    with pytest.raises(DatasetError, match="GOPR0415_frame_000001_gt_labelTrainIds.png"):
        ACDC(root, "val")


def test_corrupt_png_names_the_file(tmp_path):
    root = trees.cityscapes(tmp_path / "Cityscapes")
    bad = root / "gtFine/val/bremen/bremen_000001_000019_gtFine_labelTrainIds.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = Cityscapes(root, "val")
    with pytest.raises(DatasetError, match="bremen_000001_000019_gtFine_labelTrainIds.png"):
        ds[1]


def test_robotcar_correspondence_pairs_from_mat_files(tmp_path):
    """MATLAB v7.3 files are HDF5: the image paths are stored as arrays of character codes (docs/refign.md#robotcar)."""
    pytest.importorskip("h5py")
    root = trees.robotcar_labelled(tmp_path / "RobotCar")
    pairs = [
        ("overcast-reference/rear/100.jpg", "night/rear/200.jpg"),
        ("overcast-reference/rear/101.jpg", "dawn/rear/300.jpg"),
    ]
    trees.robotcar_pairs(root, pairs)
    ds = RobotCar(root, "train", load_keys=("image", "image_ref"))
    assert len(ds) == 2
    by_name = {ds[i]["filename"]: ds[i] for i in range(2)}
    assert set(by_name) == {"200.jpg", "300.jpg"}

    # the target is im_j (adverse), the reference im_i (overcast): the red level identifies the file
    def red(x):
        return float(denormalize(x)[0].mean()) * 255

    for name, (trg_value, ref_value) in {"200.jpg": (90, 40), "300.jpg": (190, 140)}.items():
        assert abs(red(by_name[name]["image"]) - trg_value) < 8
        assert abs(red(by_name[name]["image_ref"]) - ref_value) < 8


# One published file of each dataset and the files it pairs with, written out by hand (not through the
# layouts the fixtures use), so that a wrong template cannot be hidden by the fixtures that share it.
PUBLISHED = [
    (ACDC, "val", ["rgb_anon/snow/val/GOPR0122/GOPR0122_frame_000161_rgb_anon.png",
                   "gt/snow/val/GOPR0122/GOPR0122_frame_000161_gt_labelTrainIds.png",
                   "rgb_anon/snow/val_ref/GOPR0122/GOPR0122_frame_000161_rgb_ref_anon.png"]),
    (Cityscapes, "train", ["leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
                           "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png", None]),
    (DarkZurich, "val", ["rgb_anon/val/night/GOPR0356/GOPR0356_frame_000321_rgb_anon.png",
                         "gt/val/night/GOPR0356/GOPR0356_frame_000321_gt_labelTrainIds.png",
                         "rgb_anon/val_ref/day/GOPR0356_ref/GOPR0356_frame_000321_ref_rgb_anon.png"]),
    (NighttimeDriving, "test", ["leftImg8bit/test/night/0_frame_0002_leftImg8bit.png",
                                "gtCoarse_daytime_trainvaltest/test/night/0_frame_0002_gtCoarse_labelTrainIds.png", None]),
    (RobotCar, "val", ["segmented_images/validation/imgs/1418132416737115.png",
                       "segmented_images/validation/annos/1418132416737115.png", None]),
]  # fmt: skip


@pytest.mark.parametrize(("cls", "split", "files"), PUBLISHED, ids=lambda v: getattr(v, "name", None))
def test_layouts_pair_the_published_file_names(tmp_path, cls, split, files):
    for rel in filter(None, files):
        trees.png(tmp_path / rel, 1, "L" if "/gt" in rel or "annos" in rel else "RGB")
    last_condition = cls.conditions[-1:] or None  # ACDC: snow only
    entry = cls(tmp_path, split, load_keys=cls.offered_keys(split), conditions=last_condition).entries[0]
    found = [entry.image, entry.semantic, entry.image_ref]
    assert [p.relative_to(tmp_path).as_posix() if p else None for p in found] == files
