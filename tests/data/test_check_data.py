"""refign.check_data on fixture trees broken in each way: counts, and the message naming each file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refign.check_data import run
from refign.data import check
from refign.data.datasets.acdc import ACDC
from refign.data.datasets.cityscapes import Cityscapes
from refign.data.datasets.dark_zurich import DarkZurich
from tests.conftest import compose_cfg
from tests.data import trees

ROOT = Path(__file__).resolve().parents[2]
ACDC_COUNTS = {"fog": 2, "night": 3, "rain": 1, "snow": 2}


@pytest.fixture
def fixture_counts(monkeypatch):
    """The fixtures' sizes and counts stand in for the official ones."""
    for cls in (ACDC, Cityscapes, DarkZurich):
        monkeypatch.setattr(cls, "orig_dims", (trees.H, trees.W))
    counts = {("ACDC", s): ACDC_COUNTS for s in ("train", "val", "test")}
    counts |= {("Cityscapes", "train"): {"day": 3}, ("DarkZurich", "train"): {"night": 3}}
    counts |= {("DarkZurich", "val"): {"night": 2}, ("DarkZurich", "test"): {"night": 2}}
    monkeypatch.setattr(check, "OFFICIAL_COUNTS", counts)


def reports_by_title(tmp_path: Path, dataset: str, *extra: str) -> dict[str, check.Report]:
    cfg = compose_cfg([f"dataset={dataset}", f"paths.data_root={tmp_path}", *extra], "check_data")
    return {r.title.split(" [")[0]: r for r in run(cfg)}


def messages(report: check.Report) -> list[tuple[str, str]]:
    return [(p.kind, p.message) for p in report.problems]


def test_intact_acdc_tree_has_no_problem(tmp_path, fixture_counts, capsys):
    trees.acdc(tmp_path / "ACDC", ACDC_COUNTS)
    trees.cityscapes(tmp_path / "Cityscapes")
    reports = reports_by_title(tmp_path, "acdc")
    assert sorted(reports) == ["ACDC test", "ACDC train", "ACDC val", "Cityscapes train"]
    assert all(not r.problems for r in reports.values())
    assert reports["ACDC val"].found == ACDC_COUNTS
    assert reports["ACDC val"].paired == {"labels": [8, 8], "references": [8, 8]}
    assert reports["ACDC test"].paired == {"references": [8, 8]}  # test: references, no labels
    assert "nothing missing or broken" in capsys.readouterr().out.splitlines()[-1]


def test_broken_acdc_tree_names_every_file(tmp_path, fixture_counts, capsys):
    root = trees.acdc(tmp_path / "ACDC", ACDC_COUNTS)
    trees.cityscapes(tmp_path / "Cityscapes")
    val_img = sorted((root / "rgb_anon" / "night" / "val").rglob("*.png"))
    gone_img = val_img[0]
    gone_img.unlink()  # a missing image: night val 2 of 3
    ref = root / "rgb_anon/fog/val_ref/GOPR0405/GOPR0405_frame_000000_rgb_ref_anon.png"
    ref.unlink()  # a missing reference
    label = root / "gt/snow/val/GOPR0405/GOPR0405_frame_000300_gt_labelTrainIds.png"
    Image.fromarray(np.full((trees.H, trees.W), 40, np.uint8)).save(label)  # label id 40: not a train id
    rgb_label = root / "gt/snow/val/GOPR0415/GOPR0415_frame_000301_gt_labelTrainIds.png"
    trees.png(rgb_label, 3)  # a colour PNG where train ids belong
    garbage = root / "rgb_anon/rain/val/GOPR0405/GOPR0405_frame_000200_rgb_anon.png"
    garbage.write_bytes(b"not a png")  # unreadable
    small_ref = root / "rgb_anon/night/val_ref/GOPR0415/GOPR0415_frame_000101_rgb_ref_anon.png"
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(small_ref)  # reference of another size
    truncated = root / "rgb_anon/fog/train/GOPR0405/GOPR0405_frame_000000_rgb_anon.png"
    truncated.write_bytes(truncated.read_bytes()[:60])  # header intact, data cut short

    reports = reports_by_title(tmp_path, "acdc")
    val = reports["ACDC val"]
    assert val.found == {"fog": 2, "night": 2, "rain": 0, "snow": 2}  # the unreadable rain image is not found
    assert val.paired == {"labels": [7, 7], "references": [6, 7]}  # present, whatever their values
    problems = messages(val)
    assert ("missing", f"{ref}: file not found") in problems
    assert ("labels", f"{label}: values [40] outside the train ids") in problems
    assert ("labels", f"{rgb_label}: mode RGB, expected one channel of ids") in problems
    assert any(k == "unreadable" and m.startswith(f"{garbage}: ") for k, m in problems)
    assert ("size", f"{small_ref}: 4×8, its image {small_ref.parent.parent.parent / 'val/GOPR0415/GOPR0415_frame_000101_rgb_anon.png'} is 8×16") in problems  # fmt: skip
    assert ("count", f"{root}/rgb_anon/night/val: 2 of 3 night images (1 missing)") in problems
    assert ("count", f"{root}/rgb_anon/rain/val: 0 of 1 rain images (1 missing)") in problems
    assert len(problems) == 7  # nothing else: in particular not the deleted image's label and reference
    assert not reports["ACDC train"].problems  # headers only: the truncated image is not decoded
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("check_data: 4 split(s)") and last.endswith(
        "7 problem(s) (1 missing, 1 unreadable, 1 size, 2 labels, 2 count)"
    )

    decoded = reports_by_title(tmp_path, "acdc", "decode=true")["ACDC train"]
    assert [(k, m.split(": ")[0]) for k, m in messages(decoded)] == [
        ("unreadable", str(truncated)),
        ("count", f"{root}/rgb_anon/fog/train"),
    ]


def test_missing_condition_folder_and_dark_zurich_pairs(tmp_path, fixture_counts):
    root = trees.acdc(tmp_path / "ACDC", ACDC_COUNTS)
    trees.cityscapes(tmp_path / "Cityscapes")
    for f in sorted((root / "rgb_anon" / "snow" / "test").rglob("*")):
        if f.is_file():
            f.unlink()
    test = reports_by_title(tmp_path, "acdc")["ACDC test"]
    assert test.found == {"fog": 2, "night": 3, "rain": 1, "snow": 0}  # the others are still counted
    assert [k for k, _ in messages(test)] == ["missing"]
    assert str(root / "rgb_anon" / "snow" / "test") in messages(test)[0][1]

    dz = trees.dark_zurich(tmp_path / "DarkZurich")
    night = dz / "rgb_anon/train/night/GOPR0351/GOPR0351_frame_000001_rgb_anon.png"
    night.unlink()
    train = reports_by_title(tmp_path, "dark_zurich")["DarkZurich train"]
    assert train.found == {"night": 2} and train.paired == {"references": [3, 3]}
    assert ("missing", f"{night}: file not found") in messages(train)


def test_cli_exits_nonzero_against_the_official_counts(tmp_path):
    trees.acdc(tmp_path / "ACDC", ACDC_COUNTS)
    trees.cityscapes(tmp_path / "Cityscapes")
    cmd = [sys.executable, "-m", "refign.check_data", "dataset=acdc", f"paths.data_root={tmp_path}"]
    cmd.append(f"paths.output_dir={tmp_path}/outputs")
    out = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert out.returncode == 1, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("ACDC val") and "images fog 2/100, night 3/106" in line for line in lines)
    assert f"{tmp_path}/ACDC/rgb_anon/night/val: 3 of 106 night images (103 missing)" in out.stdout
    assert lines[-1].startswith("check_data: 4 split(s), 27 images")


def test_megadepth_scene_info_and_test_csv(tmp_path):
    root = tmp_path / "MegaDepth"
    listed = [f"Undistorted/0001/images/{i}.jpg" for i in range(3)]
    for rel in listed[:2] + ["Test/test1600Pairs/s1/a.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(root / rel)
    (root / "scene_info").mkdir()
    paths = np.array([listed[0], None, listed[1], listed[2]], dtype=object)
    np.savez(root / "scene_info" / "0121.0.npz", image_paths=paths, depth_paths=paths)
    (root / "Test" / "test1600Pairs.csv").write_text(
        "scene,source_image,target_image,XA,YA,XB,YB\ns1,a.jpg,b.jpg,1;2,1;2,1;2,1;2\n"
    )
    cfg = compose_cfg(["pairs=megadepth", f"paths.data_root={tmp_path}"], "check_data")
    scenes, csv = run(cfg)
    assert scenes.found == {"all": 1, "official validation": 1} and scenes.paired == {"images": [2, 3]}
    assert ("missing", f"{root / listed[2]}: listed in 0121.0.npz") in messages(scenes)
    assert ("missing", f"{root}/scene_info/0168.0.npz: official validation scene") in messages(scenes)
    assert len(messages(scenes)) == 1 + 24  # the absent image, and 24 of the 25 validation scenes
    assert csv.found == {"csv rows": 1} and csv.paired == {"images": [1, 2]}
    assert messages(csv) == [
        ("missing", f"{root}/Test/test1600Pairs/s1/b.jpg: file not found"),
        ("count", f"{root}/Test/test1600Pairs.csv: 1 of 1600 pairs"),
    ]


def test_the_synthetic_pairs_are_checked(tmp_path, capsys):
    """``pairs=synthetic`` composes for check_data (its training recipe is align_train's alone) and reports
    the generated train and test pairs."""
    sizes = ["pairs.train.num_images=8", "pairs.eval.num_images=4", "pairs.train.size=[32,64]"]
    cfg = compose_cfg(["pairs=synthetic", f"paths.cache_dir={tmp_path}", *sizes], "check_data")
    train, test = run(cfg)
    assert (train.title, test.title) == ("synthetic matching train", "synthetic matching test")
    assert sum(train.found.values()) == 8 and sum(test.found.values()) == 4
    assert train.sizes == {(32, 64): 8} and test.paired["flow"] == [4, 4]
    assert not train.problems and not test.problems
    assert "nothing missing or broken" in capsys.readouterr().out.splitlines()[-1]
