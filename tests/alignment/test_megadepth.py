"""MegaDepth / csv matching loaders on tiny fixture trees with the real layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from refign.data.datasets.megadepth import CorrespondenceCsv, MegaDepthPairs
from refign.data.io import DatasetError


def write_image(path, w: int, h: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def megadepth_root(tmp_path):
    root = tmp_path / "MegaDepth"
    images = [f"Undistorted_SfM/0001/images/{i}.jpg" for i in range(3)]
    for i, rel in enumerate(images):
        write_image(root / rel, 40, 30, i)
    info = root / "scene_info"
    info.mkdir(parents=True)
    overlap = np.array([[1.0, 0.5, 0.1], [0.5, 1.0, 0.0], [0.1, 0.0, 0.0]])
    points = np.empty(3, dtype=object)
    points[0] = {7: (10.0, 5.0), 8: (20.0, 15.0)}
    points[1] = {7: (12.0, 6.0), 9: (1.0, 1.0)}
    points[2] = {}
    np.savez(
        info / "0001.0.npz",
        image_paths=np.array(images, dtype=object),
        depth_paths=np.array(["d0.h5", "d1.h5", None], dtype=object),
        points3D_id_to_2D=points,
        overlap_matrix=overlap,
    )
    return root


def test_megadepth_pairs_layout_and_correspondences(megadepth_root):
    ds = MegaDepthPairs(megadepth_root, split="train", dims=(60, 80))
    # image 2 has no depth; the (0,0), (0,1), (1,0), (1,1) entries lie in (0.3, 1]
    assert len(ds) == 4
    pairs = {(a, b) for a, b, _, _ in ds.items}
    assert ("Undistorted_SfM/0001/images/0.jpg", "Undistorted_SfM/0001/images/1.jpg") in pairs
    idx = next(i for i, it in enumerate(ds.items) if it[0].endswith("0.jpg") and it[1].endswith("1.jpg"))
    sample = ds[idx]
    assert sample["image"].shape == (3, 60, 80) and sample["image_ref"].shape == (3, 60, 80)
    np.testing.assert_allclose(sample["corr_pts_ref"].numpy(), [[20.0, 10.0]])  # (10, 5) × (80/40, 60/30)
    np.testing.assert_allclose(sample["corr_pts"].numpy(), [[24.0, 12.0]])


def test_a_corrupt_megadepth_image_names_the_file(megadepth_root):
    bad = megadepth_root / "Undistorted_SfM/0001/images/1.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    ds = MegaDepthPairs(megadepth_root, split="train", dims=(60, 80))
    idx = next(i for i, it in enumerate(ds.items) if it[1].endswith("1.jpg"))
    with pytest.raises(DatasetError, match=f"^cannot read image {bad}: "):
        ds[idx]


def test_megadepth_without_scene_info_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "MegaDepth" / "scene_info")):
        MegaDepthPairs(tmp_path / "MegaDepth")


def test_correspondence_csv_resize_and_points(tmp_path):
    root = tmp_path / "Test"
    write_image(root / "test1600Pairs" / "s1" / "a.jpg", 120, 60, 0)
    write_image(root / "test1600Pairs" / "s1" / "b.jpg", 60, 90, 1)
    (root / "test1600Pairs.csv").write_text(
        "scene,source_image,target_image,XA,YA,XB,YB\ns1,a.jpg,b.jpg,10;20,5;6,3;4,30;40\n"
    )
    ds = CorrespondenceCsv(root, "test1600Pairs.csv", "test1600Pairs", short_side=30)
    s = ds[0]
    assert s["image_ref"].shape == (3, 30, 60) and s["image"].shape == (3, 45, 30)
    np.testing.assert_allclose(s["corr_pts_ref"].numpy(), [[5.0, 2.5], [10.0, 3.0]])
    np.testing.assert_allclose(s["corr_pts"].numpy(), [[1.5, 15.0], [2.0, 20.0]])
    with pytest.raises(DatasetError, match="nope.csv"):
        CorrespondenceCsv(root, "nope.csv", "test1600Pairs")
