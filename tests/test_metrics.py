"""mIoU against an independent per-class computation, optimiser groups and the official schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from refign.engine.metrics import ConfusionMatrix
from refign.engine.optim import build_scheduler, param_groups, warmup_poly_factor


def reference_iou(pred: np.ndarray, gt: np.ndarray, n: int, ignore: int = 255) -> np.ndarray:
    keep = gt != ignore
    out = np.zeros(n)
    for c in range(n):
        inter = np.sum((pred == c) & (gt == c) & keep)
        union = np.sum(((pred == c) | (gt == c)) & keep)
        out[c] = inter / union if union else 0.0
    return out


def test_miou_equals_independent_computation_on_random_data():
    rng = np.random.default_rng(0)
    cm = ConfusionMatrix(19)
    preds, gts = [], []
    for _ in range(3):  # accumulated over several "images", not averaged per image
        gt = rng.integers(0, 19, (2, 17, 23))
        gt[rng.random(gt.shape) < 0.1] = 255
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, 19, gt.shape)) % 255 % 19
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        preds.append(pred.ravel())
        gts.append(gt.ravel())
    expected = reference_iou(np.concatenate(preds), np.concatenate(gts), 19)
    np.testing.assert_allclose(cm.iou().numpy(), expected, rtol=1e-12)
    assert cm.miou() == pytest.approx(expected.mean())


def test_miou_over_present_classes_skips_absent_ground_truth():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 1, 1]))
    assert cm.miou() == pytest.approx((1 + 2 / 3 + 0 + 0) / 4)
    assert cm.miou(over_present_classes=True) == pytest.approx((1 + 2 / 3) / 2)


def test_param_groups_follow_the_official_split():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
            self.head = nn.Conv2d(4, 2, 1)
            self.frozen = nn.Linear(2, 2).requires_grad_(False)

    class Method(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Net()

    groups = {g["name"]: g for g in param_groups(Method(), lr=1.0, weight_decay=0.01, backbone_lr_factor=0.1)}
    assert set(groups) == {"backbone_weight", "backbone_bias", "head_weight", "head_bias"}
    assert groups["backbone_weight"]["lr"] == 0.1 and groups["head_weight"]["lr"] == 1.0
    assert groups["backbone_bias"]["weight_decay"] == 0 and groups["head_weight"]["weight_decay"] == 0.01
    assert len(groups["backbone_bias"]["params"]) == 3  # conv bias, BN weight, BN bias
    n_trainable = sum(len(g["params"]) for g in groups.values())
    assert n_trainable == 6  # the frozen Linear is excluded


def test_warmup_poly_schedule_formula():
    W, r, N = 10, 1e-6, 110
    assert warmup_poly_factor(0, W, r, N, 1.0) == pytest.approx(r)
    assert warmup_poly_factor(5, W, r, N, 1.0) == pytest.approx(1 - 0.5 * (1 - r))
    assert warmup_poly_factor(10, W, r, N, 1.0) == pytest.approx(1.0)
    assert warmup_poly_factor(60, W, r, N, 1.0) == pytest.approx(0.5)
    assert warmup_poly_factor(110, W, r, N, 0.9) == 0.0
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_scheduler(opt, W, r, N, 1.0)
    for _ in range(60):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
