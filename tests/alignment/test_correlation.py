"""Correlation ops: extension vs PyTorch vs a naive loop; global correlation vs an einsum reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from refign.alignment import correlation as corr_mod
from refign.alignment.correlation import (
    GlobalCorrelation,
    LocalCorrelation,
    global_correlation,
    local_correlation,
    mutual_matching,
)


def naive_local(trg: torch.Tensor, src: torch.Tensor, patch: int) -> torch.Tensor:
    b, c, h, w = trg.shape
    r = patch // 2
    out = torch.zeros(b, patch * patch, h, w, dtype=torch.float64)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                for dy in range(-r, r + 1):
                    for dx in range(-r, r + 1):
                        ys, xs = y + dy, x + dx
                        if 0 <= ys < h and 0 <= xs < w:
                            k = (dy + r) * patch + (dx + r)
                            out[n, k, y, x] = float((trg[n, :, y, x] * src[n, :, ys, xs]).sum())
    return out


def test_local_torch_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    trg, src = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 5, 6, generator=g)
    got = local_correlation(trg, src, patch_size=5, force_torch=True)
    torch.testing.assert_close(got.double(), naive_local(trg, src, 5), rtol=1e-5, atol=1e-5)


def test_local_channel_order_is_dy_major():
    trg = torch.zeros(1, 1, 9, 9)
    src = torch.zeros(1, 1, 9, 9)
    trg[0, 0, 4, 4] = 1.0
    src[0, 0, 4 - 2, 4 + 3] = 1.0  # dy = -2, dx = +3
    corr = local_correlation(trg, src, patch_size=9, force_torch=True)
    assert corr[0, :, 4, 4].argmax().item() == (-2 + 4) * 9 + (3 + 4)


@pytest.mark.skipif(not corr_mod.extension_available(), reason="spatial_correlation_sampler not installed")
def test_extension_matches_torch():
    g = torch.Generator().manual_seed(1)
    trg, src = torch.randn(2, 16, 12, 10, generator=g), torch.randn(2, 16, 12, 10, generator=g)
    ext = LocalCorrelation(9)(src, trg)
    ref = LocalCorrelation(9, force_torch=True)(src, trg)
    torch.testing.assert_close(ext, ref, rtol=1e-5, atol=1e-5)
    raw_ext = local_correlation(trg, src, 9)
    torch.testing.assert_close(
        raw_ext, local_correlation(trg, src, 9, force_torch=True), rtol=1e-5, atol=1e-5
    )


def test_local_backward_matches_between_backends():
    if not corr_mod.extension_available():
        pytest.skip("spatial_correlation_sampler not installed")
    g = torch.Generator().manual_seed(2)
    grads = []
    for force in (False, True):
        trg = torch.randn(1, 8, 7, 7, generator=torch.Generator().manual_seed(3)).requires_grad_()
        src = torch.randn(1, 8, 7, 7, generator=torch.Generator().manual_seed(4)).requires_grad_()
        weight = torch.randn(1, 81, 7, 7, generator=g.manual_seed(5))
        (local_correlation(trg, src, 9, force_torch=force) * weight).sum().backward()
        grads.append((trg.grad, src.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_global_matches_einsum_and_mutual_matching():
    g = torch.Generator().manual_seed(0)
    src = F.normalize(torch.randn(2, 8, 4, 5, generator=g), dim=1)
    trg = F.normalize(torch.randn(2, 8, 3, 6, generator=g), dim=1)
    ref = torch.einsum("bcij,bcyx->bijyx", src, trg).reshape(2, 20, 3, 6)  # k = y_s * W_s + x_s
    torch.testing.assert_close(global_correlation(src, trg), ref)

    c4 = ref.view(2, 4, 5, 3, 6)
    max_a = c4.amax(dim=(3, 4), keepdim=True)  # over targets, per source position
    max_b = c4.amax(dim=(1, 2), keepdim=True)  # over sources, per target position
    mutual = (c4 * ((c4 / (max_a + 1e-5)) * (c4 / (max_b + 1e-5)))).reshape(2, 20, 3, 6)
    torch.testing.assert_close(mutual_matching(ref), mutual)
    expected = F.normalize(F.relu(mutual), dim=1)
    torch.testing.assert_close(GlobalCorrelation(cyclic_consistency=True)(src, trg), expected)
