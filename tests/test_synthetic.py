"""The embedded benchmark: determinism, geometry of the reference views, and a real domain gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from refign.data.classes import CLASS_IDS
from refign.data.datasets.synthetic import SyntheticDataset
from refign.data.synthetic.generator import ViewConfig, generate
from refign.data.synthetic.render import LARGE_STATIC

SIZE = (64, 128)


def test_generator_is_deterministic_and_seed_dependent():
    a = generate((3, 1, 1, 7), SIZE, "night", ViewConfig())
    b = generate((3, 1, 1, 7), SIZE, "night", ViewConfig())
    c = generate((4, 1, 1, 7), SIZE, "night", ViewConfig())
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])


def test_dataset_cache_round_trip(tmp_path):
    kw = dict(
        split="val",
        domain="target",
        num_images=6,
        size=SIZE,
        seed=1,
        load_keys=("image", "semantic", "image_ref", "flow", "flow_valid"),
    )
    fresh = SyntheticDataset(**kw, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    cached = SyntheticDataset(**kw, cache_dir=tmp_path)
    for key in fresh.arrays:
        np.testing.assert_array_equal(fresh.arrays[key], cached.arrays[key])
    other = SyntheticDataset(**{**kw, "seed": 2}, cache_dir=tmp_path)
    assert other.fingerprint != fresh.fingerprint
    sample = fresh[0]
    assert sample["image"].shape == (SIZE[0], SIZE[1], 3) and sample["flow"].shape == (2, *SIZE)
    assert sample["condition"] in ("night", "fog", "rain", "snow")


@pytest.mark.parametrize("condition", ["night", "fog", "rain", "snow"])
def test_reference_label_warped_by_gt_flow_matches_target_static_labels(condition):
    """Independent check of the flow: sample the reference label at p + F(p) (nearest) with grid_sample."""
    s = generate((0, 2, 1, 5), SIZE, condition, ViewConfig())
    h, w = SIZE
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    flow = torch.from_numpy(s["flow"]).double()
    grid = torch.stack([2 * (xs + flow[0]) / (w - 1) - 1, 2 * (ys + flow[1]) / (h - 1) - 1], -1)[None]
    ref = torch.from_numpy(s["semantic_ref"]).double()[None, None]
    warped = F.grid_sample(ref, grid, mode="nearest", align_corners=True)[0, 0].numpy()
    valid = s["flow_valid"]
    assert valid.mean() > 0.5, "most of the target should be visible in the reference"
    static = np.isin(s["semantic"], [CLASS_IDS[c] for c in LARGE_STATIC])
    region = valid & static
    agreement = (warped[region] == s["semantic"][region]).mean()
    assert agreement > 0.97, f"warped reference labels agree on only {agreement:.3f} of static pixels"
    # and the flow is not trivially zero: the reference really is another viewpoint
    assert np.abs(s["flow"]).mean() > 1.0


def test_adverse_conditions_hurt_large_static_classes_most():
    """Contrast between neighbouring large static classes collapses at night more than object contrast."""
    clear = generate((0, 2, 1, 9), SIZE, None, ViewConfig())
    night = generate((0, 2, 1, 9), SIZE, "night", ViewConfig())
    lab = night["semantic"]

    def class_gap(image, a, b):
        img = image.astype(np.float64)
        ma, mb = lab == CLASS_IDS[a], lab == CLASS_IDS[b]
        if not ma.any() or not mb.any():
            pytest.skip("scene lacks a class")
        return np.abs(img[ma].mean(0) - img[mb].mean(0)).sum()

    assert class_gap(night["image"], "road", "sidewalk") < 0.3 * class_gap(clear["image"], "road", "sidewalk")
