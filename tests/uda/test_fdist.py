from collections import Counter

import pytest
import torch

from refign.uda.fdist import downscale_label_ratio, feature_distance, feature_distance_mask


def cell_labels_by_counting(label, scale, min_ratio, num_classes):
    """The downscaling rule written out cell by cell (ties broken towards the smaller class, as argmax)."""
    b, h, w = label.shape
    out = torch.empty(b, h // scale, w // scale, dtype=torch.long)
    for n in range(b):
        for i in range(h // scale):
            for j in range(w // scale):
                cell = label[n, i * scale : (i + 1) * scale, j * scale : (j + 1) * scale].flatten().tolist()
                counts = Counter(num_classes if v == 255 else v for v in cell)
                best = min(counts, key=lambda c: (-counts[c], c))
                ok = best != num_classes and counts[best] / len(cell) >= min_ratio
                out[n, i, j] = best if ok else 255
    return out


@pytest.mark.parametrize("min_ratio", [0.0, 0.5, 0.75])
def test_downscale_label_ratio(min_ratio):
    g = torch.Generator().manual_seed(0)
    label = torch.randint(0, 3, (2, 16, 24), generator=g)
    label[label == 2] = 255
    label[:, :8, :8] = 1  # a pure cell
    ours = downscale_label_ratio(label, 4, min_ratio, num_classes=3)
    assert torch.equal(ours, cell_labels_by_counting(label, 4, min_ratio, 3))


def test_mask_and_distance():
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, :4, :4] = 6  # one pure "thing" cell
    label[0, 4:, 4:] = 7
    label[0, 4, 4] = 0  # 15/16 ≥ 0.75: still a thing cell
    label[0, :4, 4:] = 11
    label[0, :2, 4:] = 255  # a non-thing cell, half ignored
    mask = feature_distance_mask(label, (2, 2), classes=[6, 7], min_ratio=0.75, num_classes=19)
    assert mask.tolist() == [[[True, False], [False, True]]]
    fs, fi = torch.randn(1, 4, 2, 2, requires_grad=True), torch.randn(1, 4, 2, 2)
    dist, defined = feature_distance(fs, fi, mask)
    expected = ((fs - fi).norm(dim=1)[0, 0, 0] + (fs - fi).norm(dim=1)[0, 1, 1]) / 2
    assert defined
    torch.testing.assert_close(dist, expected)


def test_empty_mask_is_zero_not_nan():
    fs = torch.randn(1, 4, 2, 2, requires_grad=True)
    dist, defined = feature_distance(fs, torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
    assert not defined and dist.item() == 0
    dist.backward()  # still part of the graph
    assert torch.all(fs.grad == 0)
