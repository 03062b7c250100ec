"""Image helpers every layer shares: ImageNet (de)normalisation, bilinear resize, separable Gaussian blur.

They sit below ``models``, ``data``, ``alignment`` and ``uda`` so that none of those has to import another
(or keep a copy) for a three-line tensor operation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return image.new_tensor(IMAGENET_MEAN)[:, None, None], image.new_tensor(IMAGENET_STD)[:, None, None]


def normalize(image: torch.Tensor) -> torch.Tensor:
    """(…, 3, H, W) in [0, 1] → ImageNet-normalised (what every network here takes)."""
    mean, std = _stats(image)
    return (image - mean) / std


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`, for visualisation and photometric augmentation."""
    mean, std = _stats(image)
    return image * std + mean


def to_rgb_uint8(image: torch.Tensor) -> np.ndarray:
    """One normalised (3, H, W) image → (H, W, 3) uint8, for panels and PNGs."""
    return (denormalize(image).clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=False``, the only upsampling the official code uses (a no-op at
    the same size, where bilinear interpolation is the identity anyway)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def gaussian_kernel1d(size: int, sigma: float, device=None, dtype=None) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd length ``size`` centred on its middle tap."""
    x = torch.arange(size, device=device, dtype=dtype) - size // 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(image: torch.Tensor, sigma: float, kernel_size: tuple[int, int]) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, H, W) tensor with (odd) kernel sizes ``(ky, kx)`` and reflect
    borders (kornia's ``GaussianBlur2d`` and torchvision's ``GaussianBlur`` semantics): vertical pass, then
    horizontal, each channel on its own."""
    c = image.shape[1]
    ky, kx = kernel_size
    gy = gaussian_kernel1d(ky, sigma, image.device, image.dtype).view(1, 1, ky, 1).expand(c, 1, ky, 1)
    gx = gaussian_kernel1d(kx, sigma, image.device, image.dtype).view(1, 1, 1, kx).expand(c, 1, 1, kx)
    out = F.pad(image, (kx // 2, kx // 2, ky // 2, ky // 2), mode="reflect")
    return F.conv2d(F.conv2d(out, gy, groups=c), gx, groups=c)
