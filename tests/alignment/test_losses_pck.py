"""Losses, loss weighting, synthetic warps and the PCK metric."""

from __future__ import annotations

import math
import random

import pytest
import torch

from refign.alignment.pck import SparseEPE
from refign.alignment.training.losses import (
    balance_weights,
    bipath_loss,
    gaussian_nll,
    huber2,
    warp_supervision_loss,
)
from refign.alignment.training.synthetic_warps import WarpConfig, homography_mapping, random_flow, tps_mapping
from refign.alignment.warp import warp


def test_pck_exact_flow_is_100_and_counts_correspondences():
    flow = torch.randn(2, 12, 16) * 3
    metric = SparseEPE()
    epe = metric.update_dense(flow, flow, torch.ones(12, 16, dtype=torch.bool))
    assert epe.max() < 1e-5
    out = metric.compute()
    assert out["pck1"] == out["pck3"] == out["pck5"] == 100.0 and out["aepe"] < 1e-5


def test_pck_nearest_pixel_inclusive_thresholds_and_bounds():
    flow = torch.zeros(2, 10, 10)
    flow[0, 2, 3] = 3.0  # estimate at target pixel (x=3, y=2)
    metric = SparseEPE()
    pts_trg = torch.tensor([[3.4, 2.4], [3.0, 2.0], [9.6, 0.0]])  # the last one rounds out of bounds
    pts_src = pts_trg + torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 0.0]])
    epe = metric.update(flow, pts_src, pts_trg)
    torch.testing.assert_close(epe, torch.tensor([3.0, 3.0]))
    out = metric.compute()
    assert out["pck1"] == 0.0 and out["pck3"] == 100.0 and metric.n_points == 2


def test_gaussian_nll_formula_and_masking():
    flow, gt = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    gt[:, 0] = 2.0  # |d| = 2 → huber 2·2 − 1 = 3
    logvar = torch.full((1, 1, 4, 4), 0.5)
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    expected = 0.5 * math.exp(-0.5) * 3 + 0.5 + math.log(2 * math.pi)
    assert gaussian_nll(flow, logvar, gt, mask).item() == pytest.approx(expected, rel=1e-6)
    assert huber2(torch.tensor([[0.5, -3.0]])).item() == pytest.approx(0.25 + 5.0)
    two = torch.cat([logvar, logvar], 1)  # ln(σ² + σ²) = 0.5 + ln 2
    s = 0.5 + math.log(2)
    assert gaussian_nll(flow, two, gt, mask).item() == pytest.approx(
        0.5 * math.exp(-s) * 3 + s + math.log(2 * math.pi)
    )
    assert gaussian_nll(flow, logvar, gt, torch.zeros_like(mask)).item() == 0.0


def test_losses_are_minimal_for_consistent_flows():
    h = w = 32
    gt = torch.zeros(1, 2, h, w)
    gt[:, 0] = 1.5
    mask = torch.ones(1, h, w, dtype=torch.bool)
    levels = [
        (torch.nn.functional.interpolate(gt, size=s, mode="bilinear"), torch.zeros(1, 1, *s))
        for s in ((8, 8), (16, 16))
    ]
    good = warp_supervision_loss(levels, gt, mask)
    bad = warp_supervision_loss([(f + 2, s) for f, s in levels], gt, mask)
    assert good < bad
    # I′→J = gt/2 then J→I = gt/2 composes to gt: bipath loss equals the exact-flow value
    half = [(f / 2, s) for f, s in levels]
    exact = 2 * (math.log(2) + math.log(2 * math.pi))  # s = ln(1 + 1), ρ = 0, two levels
    assert bipath_loss(half, half, gt, mask, visibility_mask=True).item() == pytest.approx(exact, rel=1e-4)


def test_balance_weights_official_and_intended():
    t = torch.tensor
    assert balance_weights(t(1.0), t(4.0), "official") == (0.0, 1.0)
    assert balance_weights(t(4.0), t(1.0), "official") == (1.0, 100.0)
    assert balance_weights(t(1.0), t(4.0), "intended") == (4.0, 1.0)
    assert balance_weights(t(4.0), t(1.0), "intended") == (1.0, 4.0)
    assert balance_weights(t(1000.0), t(1.0), "intended") == (1.0, 100.0)
    with pytest.raises(ValueError, match="loss_weighting"):
        balance_weights(t(1.0), t(1.0), "other")


def test_synthetic_warps_identity_and_consistency():
    xs = torch.linspace(-1, 1, 9)
    torch.testing.assert_close(homography_mapping(9, 9, 0.0)[0, 0], xs)
    torch.testing.assert_close(tps_mapping(9, 9, 0.0)[1, :, 0], xs)
    random.seed(0)
    torch.manual_seed(0)
    for kind in ("hom", "tps", "afftps"):
        flow = random_flow(48, 64, WarpConfig(transforms=(kind,), elastic=kind == "tps"))
        assert flow.shape == (2, 48, 64) and torch.isfinite(flow).all()
    # the flow maps the prime grid into the image: sampling a linear ramp reproduces x + flow_x
    ramp = torch.arange(64.0).expand(48, 64)[None, None]
    out, mask = warp(ramp, flow[None], return_mask=True)
    expected = torch.arange(64.0) + flow[0]
    torch.testing.assert_close(out[0, 0][mask[0]], expected[mask[0]], rtol=1e-4, atol=1e-3)
