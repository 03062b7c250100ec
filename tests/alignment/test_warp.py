"""warp(): the official align-corners convention, strict validity mask, zero-flow shortcut."""

from __future__ import annotations

import torch

from refign.alignment.warp import inbounds_mask, pixel_grid, warp


def smooth_image(h: int = 24, w: int = 32) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 3, h), torch.linspace(0, 4, w), indexing="ij")
    return torch.stack([torch.sin(x) * torch.cos(y), x * 0.1 + y, torch.cos(x + y)])[None]


def test_integer_translation_is_exact_in_valid_region():
    img = smooth_image()
    flow = torch.zeros(1, 2, 24, 32)
    flow[:, 0], flow[:, 1] = 3.0, -2.0
    out, mask = warp(img, flow, return_mask=True)
    expected = torch.zeros_like(img)
    expected[..., 2:, :29] = img[..., :22, 3:]
    assert mask.sum() > 0
    torch.testing.assert_close(out[0][:, mask[0]], expected[0][:, mask[0]])
    # strict mask: sample column 3 + x must be < 31 and > 0; row y - 2 must be in (0, 23)
    assert not mask[0, :, 28:].any() and mask[0, 3:23, :28].all() and not mask[0, :3].any()


def test_homography_flow_reproduces_warped_image():
    h, w = 24, 32
    grid = pixel_grid(h, w)
    hom = torch.tensor([[1.02, 0.03, -1.0], [-0.02, 0.98, 0.5], [1e-4, -2e-4, 1.0]])
    pts = torch.cat([grid.reshape(2, -1), torch.ones(1, h * w)])
    mapped = hom @ pts
    mapped = (mapped[:2] / mapped[2:]).reshape(2, h, w)
    flow = (mapped - grid)[None]
    # a linear image is reproduced exactly by bilinear sampling: value = a·x + b·y + c
    a, b, c = 0.3, -0.7, 2.0
    img = (a * grid[0] + b * grid[1] + c)[None, None]
    out, mask = warp(img, flow, return_mask=True)
    expected = a * mapped[0] + b * mapped[1] + c
    assert mask.float().mean() > 0.8
    torch.testing.assert_close(out[0, 0][mask[0]], expected[mask[0]], rtol=1e-4, atol=1e-4)


def test_zero_flow_returns_input_and_full_mask():
    img = smooth_image()
    out, mask = warp(img, torch.zeros(1, 2, 24, 32), return_mask=True)
    assert torch.equal(out, img) and mask.all()


def test_inclusive_vs_strict_border():
    flow = torch.zeros(1, 2, 4, 5)
    flow[:, 0] = 1e-3  # non-zero so the shortcut does not apply
    _, strict = warp(torch.ones(1, 1, 4, 5), flow, return_mask=True)
    inclusive = inbounds_mask(torch.zeros(1, 2, 4, 5))
    assert inclusive.all()
    # x + 0.001 is strictly inside for columns 0..3, outside for the last; rows 0 and 3 lie on the border
    assert strict[0, 1:3, :4].all() and not strict[0, :, 4].any()
    assert not strict[0, 0].any() and not strict[0, 3].any()
