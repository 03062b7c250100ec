import math

import numpy as np
import pytest
import torch

from refign.uda.mix import class_masks, class_mix


def full_labels(classes, b=3, size=16):
    """Every image contains every class, so the chosen classes can be read back from the mask."""
    cls = torch.tensor(classes)
    idx = torch.stack([torch.randperm(size * size) % len(classes) for _ in range(b)])
    return cls[idx].view(b, size, size)


@pytest.mark.parametrize("classes", [[0, 1, 2, 3], [0, 3, 5, 7, 255], [4]])
def test_masks_pick_half_of_batch_classes(classes):
    labels = full_labels(classes)
    masks = class_masks(labels, np.random.default_rng(0))
    for label, mask in zip(labels, masks, strict=True):
        picked = torch.unique(label[mask.bool()])
        assert len(picked) == math.ceil(len(classes) / 2)
        assert torch.equal(mask.bool(), torch.isin(label, picked))


def test_class_pool_is_the_whole_batch():
    """docs/quirks.md#q3: image 0 has only class 0, yet classes of image 1 are candidates for its mask."""
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[1] = torch.arange(1, 4).repeat(22)[:64].view(8, 8)
    rng = np.random.default_rng(0)
    draws = [class_masks(labels, rng)[0].max().item() for _ in range(400)]
    # P(class 0 among the 2 of 4 chosen) = 1/2
    assert 0.4 < np.mean(draws) < 0.6


def test_selection_frequency_is_uniform():
    labels = full_labels([0, 1, 2, 3, 4], b=1)
    rng = np.random.default_rng(1)
    counts = np.zeros(5)
    for _ in range(2000):
        mask = class_masks(labels, rng)[0].bool()
        counts[torch.unique(labels[0][mask]).numpy()] += 1
    np.testing.assert_allclose(counts / 2000, 3 / 5, atol=0.04)


def test_mixed_outputs_agree_with_mask():
    b, h, w = 2, 8, 8
    mask = (torch.rand(b, h, w) > 0.5).float()
    img_s, img_t = torch.randn(b, 3, h, w), torch.randn(b, 3, h, w)
    lbl_s, lbl_t = torch.randint(0, 5, (b, h, w)), torch.randint(0, 5, (b, h, w))
    lbl_s[0, 0, 0] = 255
    weight = torch.full((b, h, w), 0.3)
    image, label, pw = class_mix(mask, img_s, lbl_s, img_t, lbl_t, weight)
    m = mask.bool()
    assert torch.equal(image.permute(0, 2, 3, 1)[m], img_s.permute(0, 2, 3, 1)[m])
    assert torch.equal(image.permute(0, 2, 3, 1)[~m], img_t.permute(0, 2, 3, 1)[~m])
    assert torch.equal(label[m], lbl_s[m]) and torch.equal(label[~m], lbl_t[~m])
    assert label.dtype == torch.long
    assert torch.all(pw[m] == 1) and torch.allclose(pw[~m], torch.tensor(0.3))
