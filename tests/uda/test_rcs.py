import json
import logging

import numpy as np
import pytest
import torch

from refign.data.rcs import RareClassSampler, class_probabilities


class LabelSet:
    """Labels with known class sizes; ``__getitem__`` returns a random half-width crop (the "augmentation")."""

    def __init__(self, labels, seed=0):
        self.labels = labels
        self.loaded = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.labels)

    def load_label(self, i):
        self.loaded += 1
        return self.labels[i]

    def __getitem__(self, i):
        w = self.labels[i].shape[1] // 2
        x = int(self.rng.integers(0, w + 1))
        return {"semantic": torch.from_numpy(self.labels[i][:, x : x + w]), "index": i}


def make_labels():
    rng = np.random.default_rng(0)
    labels = []
    for i in range(20):
        lbl = np.zeros((20, 40), np.int64)
        lbl[:10] = 1
        if i % 4 == 0:
            lbl[:5, :10] = 2  # 50 px of a rare class in every 4th image
        if i % 10 == 0:
            lbl[15:, 30:] = 3  # 50 px of a rarer class
        lbl[rng.random(lbl.shape) < 0.05] = 255
        labels.append(lbl)
    return labels


def test_probabilities_are_temperature_softmax():
    counts = np.array([[10, 0, 30, 60]])
    f = np.array([0.1, 0.3, 0.6])
    expected = np.exp((1 - f) / 0.5) / np.exp((1 - f) / 0.5).sum()
    np.testing.assert_allclose(class_probabilities(counts, 0.5), [expected[0], 0, expected[1], expected[2]])


def test_sampling_frequencies_follow_softmax(tmp_path):
    ds = LabelSet(make_labels())
    rcs = RareClassSampler(
        ds, num_classes=4, class_temp=0.1, min_pixels=40, min_crop_ratio=0, cache_file=tmp_path / "rcs.json"
    )
    counts = np.stack([np.bincount(lbl[lbl < 4].ravel(), minlength=4) for lbl in ds.labels])
    expected = class_probabilities(counts, 0.1)
    rng = np.random.default_rng(0)
    n = 20000
    draws = [rcs.draw(rng) for _ in range(n)]
    observed = np.bincount([c for c, _ in draws], minlength=4)
    chi2 = (((observed - n * expected) ** 2) / (n * expected)).sum()
    assert chi2 < 16.3  # χ² with 3 dof, p = 0.001
    # images are drawn only among those holding more than min_pixels of the class
    assert all(i % 4 == 0 for c, i in draws if c == 2)
    assert all(i % 10 == 0 for c, i in draws if c == 3)
    rare = [i for c, i in draws if c == 3]
    assert abs(rare.count(0) / len(rare) - 0.5) < 0.05


def test_cache_is_reused_and_foreign_cache_replaced(tmp_path, caplog):
    cache = tmp_path / "rcs.json"
    ds = LabelSet(make_labels())
    RareClassSampler(ds, 4, 0.01, 40, 0, cache_file=cache)
    assert ds.loaded >= 20 and json.loads(cache.read_text())["num_images"] == 20
    ds2 = LabelSet(make_labels())
    RareClassSampler(ds2, 4, 0.01, 40, 0, cache_file=cache)
    assert ds2.loaded <= 3  # only the fingerprint's few labels
    other = LabelSet(make_labels()[:10])
    with caplog.at_level(logging.WARNING):
        RareClassSampler(other, 4, 0.01, 40, 0, cache_file=cache)
    assert "another dataset" in caplog.text
    assert json.loads(cache.read_text())["num_images"] == 10


@pytest.mark.parametrize("ratio,low,high", [(0.0, 0.1, 0.5), (0.5, 0.9, 1.0)])
def test_min_crop_ratio_redraws_the_crop(ratio, low, high):
    """Class 3 fills columns 30–39 of image 0; a half-width crop holds > 20 of its pixels with p ≈ 6/21,
    so with 10 re-draws (ratio 0.5 of 40 px) almost always."""
    rcs = RareClassSampler(LabelSet(make_labels()), 4, 0.01, min_pixels=40, min_crop_ratio=ratio)
    rcs.draw = lambda rng: (3, 0)
    hits = [int((rcs[0]["semantic"] == 3).sum()) > 20 for _ in range(200)]
    assert low < np.mean(hits) <= high


def test_class_without_candidate_is_dropped(caplog):
    with caplog.at_level(logging.WARNING):
        rcs = RareClassSampler(LabelSet(make_labels()), 4, 0.01, min_pixels=60, min_crop_ratio=0)
    assert 2 not in rcs.classes and 3 not in rcs.classes and "never exceed" in caplog.text
    with pytest.raises(ValueError, match="no image"):
        RareClassSampler(LabelSet(make_labels()), 4, 0.01, min_pixels=10**6, min_crop_ratio=0)
