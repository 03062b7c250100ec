import colorsys
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from refign.uda import augment
from refign.utils.imaging import denormalize


def test_hsv_matches_colorsys():
    rgb = torch.rand(3, 7, 9)
    hsv = augment.rgb_to_hsv(rgb)
    for i in range(7):
        for j in range(9):
            h, s, v = colorsys.rgb_to_hsv(*rgb[:, i, j].tolist())
            np.testing.assert_allclose(hsv[:, i, j].tolist(), [h * 2 * math.pi, s, v], atol=1e-5)
    torch.testing.assert_close(augment.hsv_to_rgb(hsv), rgb, atol=1e-5, rtol=0)


def test_hsv_saturation_uses_kornia_058_eps_on_dark_pixels():
    """kornia 0.5.8: s = (max − min) / (max + 1e-6). On a dark pixel the eps decides the result: doubling
    the saturation of (0.002, 0.001, 0.001) leaves green/blue at 0.002·(1 − 2·0.001/0.002001) ≈ 1e-6
    (eps 1e-8 would give 2e-8)."""
    rgb = torch.tensor([0.002, 0.001, 0.001]).view(3, 1, 1)
    sat = 0.001 / (0.002 + 1e-6)
    assert augment.rgb_to_hsv(rgb)[1].item() == pytest.approx(sat, rel=1e-6)
    out = augment.adjust_saturation(rgb, 2.0).flatten()
    expected = 0.002 * (1 - min(2 * sat, 1.0))
    torch.testing.assert_close(out, torch.tensor([0.002, expected, expected]), rtol=1e-3, atol=1e-9)


def test_jitter_strength_zero_is_identity():
    image = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(augment.color_jitter(image, 0.0), image, atol=1e-5, rtol=0)


def test_single_ops():
    image = torch.rand(1, 3, 8, 8) * 0.5 + 0.25
    torch.testing.assert_close(augment.adjust_brightness(image, 1.1), image + 0.1)
    torch.testing.assert_close(augment.adjust_contrast(image, 1.2), (image * 1.2).clamp(0, 1))
    torch.testing.assert_close(augment.adjust_hue(image, 2 * math.pi), image, atol=1e-5, rtol=0)
    gray = augment.adjust_saturation(image, 0.0)
    assert torch.allclose(gray, gray.amax(1, keepdim=True).expand_as(gray), atol=1e-6)


def test_jitter_stays_in_range_and_changes_image():
    image = torch.rand(1, 3, 16, 16)
    out = augment.color_jitter(image, 0.2)
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, image)


@pytest.mark.parametrize("length,k", [(512, 51), (1024, 103), (128, 13), (100, 9), (64, 7)])
def test_blur_kernel_size(length, k):
    assert augment.blur_kernel_size(length) == k


def test_blur_equals_2d_convolution_with_reflect_border():
    image = torch.randn(1, 3, 40, 60)
    sigma = 0.9
    ky, kx = augment.blur_kernel_size(40), augment.blur_kernel_size(60)  # 3, 5
    ys, xs = torch.arange(ky) - ky // 2, torch.arange(kx) - kx // 2
    kernel = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).expand(3, 1, ky, kx)
    padded = F.pad(image, (kx // 2, kx // 2, ky // 2, ky // 2), mode="reflect")
    torch.testing.assert_close(augment.dacs_blur(image, sigma), F.conv2d(padded, kernel, groups=3))
    const = torch.full((1, 3, 40, 60), 0.7)
    torch.testing.assert_close(augment.dacs_blur(const, sigma), const)


def test_strong_photometric_switches():
    images = torch.randn(2, 3, 32, 32)
    same = augment.strong_photometric(images, 0.1, 0.4, 0.2, 0.2, True, (0.15, 1.15))
    torch.testing.assert_close(same, images)  # jitter draw ≤ p and blur draw ≤ 0.5: untouched
    jittered = augment.strong_photometric(images, 0.9, 0.4, 0.2, 0.2, True, (0.15, 1.15))
    back = denormalize(jittered)
    assert not torch.allclose(jittered, images) and back.min() >= -1e-5 and back.max() <= 1 + 1e-5
    blurred = augment.strong_photometric(images, 0.1, 0.9, 0.2, 0.2, True, (0.15, 1.15))
    assert blurred.std() < images.std()
    no_blur = augment.strong_photometric(images, 0.1, 0.9, 0.2, 0.2, False, (0.15, 1.15))
    torch.testing.assert_close(no_blur, images)
