"""Under bf16 autocast the warp and the correlation volumes stay fp32 islands (checkable on CPU: the same
``torch.autocast`` machinery as on CUDA, where ``tests/test_gpu.py`` repeats it in fp16 and bf16)."""

from __future__ import annotations

import torch

from refign.alignment.correlation import GlobalCorrelation, LocalCorrelation, global_correlation
from refign.alignment.warp import warp


def features(seed: int, shape=(2, 16, 12, 10)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_the_raw_matmul_does_drop_to_bf16_under_cpu_autocast():
    """The control: without an island, the global volume's matmul runs in bf16 here."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert global_correlation(features(0), features(1)).dtype == torch.bfloat16


def test_correlation_volumes_are_fp32_under_bf16_autocast():
    src, trg = features(0), features(1)
    for module in (GlobalCorrelation(), LocalCorrelation(9, force_torch=True)):
        expected = module(src, trg)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = module(src, trg)
        assert got.dtype == torch.float32, type(module).__name__
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_warp_is_fp32_under_bf16_autocast_even_for_bf16_input():
    """Refign warps the teacher's bf16 reference logits: the bilinear weights and the result stay fp32."""
    x = features(2, (2, 19, 24, 32)).bfloat16()
    flow = 3 * features(3, (2, 2, 24, 32))
    expected, expected_mask = warp(x.float(), flow, return_mask=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, mask = warp(x, flow, return_mask=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(mask, expected_mask)
