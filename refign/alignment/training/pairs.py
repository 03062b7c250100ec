"""Training samples for warp consistency (docs/uawarpc.md#training-pairs): a real pair (I, J) plus I′ = synthetic warp of a
photometrically augmented I, with the known flow I′→I and its validity mask."""

from __future__ import annotations

import random

import torch
from torch.utils.data import Dataset
from torchvision.transforms import ColorJitter

from refign.alignment.training.synthetic_warps import WarpConfig, random_flow
from refign.alignment.warp import inbounds_mask, warp
from refign.utils.imaging import denormalize, gaussian_blur, normalize


class PhotometricAug:
    """Colour jitter (0.6, no hue) → random channel permutation → Gaussian blur with probability p_blur."""

    def __init__(self, jitter: float = 0.6, p_blur: float = 0.2, blur_kernel: int = 7) -> None:
        self.jitter = ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0)
        self.p_blur, self.blur_kernel = p_blur, blur_kernel

    def __call__(self, image01: torch.Tensor) -> torch.Tensor:
        x = self.jitter(image01.clamp(0, 1))[torch.randperm(3)]
        if random.random() < self.p_blur:
            sigma = random.uniform(0.2, 2.0)
            x = gaussian_blur(x[None], sigma, (self.blur_kernel, self.blur_kernel))[0]
        return x


class WarpConsistencyPairs(Dataset):
    """Wraps a dataset of ImageNet-normalised pairs (keys ``image``, ``image_ref``).

    Returns ``image`` (I), ``image_ref`` (J), ``image_prime`` (I′), ``flow_prime`` (I′→I, pixels) and
    ``mask_prime`` (bool), centre-cropped to ``crop_size`` when given.

    Args:
        pairs: the underlying pair dataset.
        warps: ranges of the synthetic warps.
        swap_p: probability of exchanging I and J.
        crop_size: (h, w) of the centre crop applied after warping (hides the warp's empty borders).
        min_valid_fraction: below this fraction of strictly valid pixels, fall back to the inclusive mask.
    """

    def __init__(
        self,
        pairs: Dataset,
        warps: WarpConfig,
        swap_p: float = 0.5,
        crop_size: tuple[int, int] | None = None,
        min_valid_fraction: float = 0.1,
    ) -> None:
        self.pairs, self.warps, self.swap_p = pairs, warps, swap_p
        self.crop_size = tuple(crop_size) if crop_size else None
        self.min_valid_fraction = min_valid_fraction
        self.photometric = PhotometricAug()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.pairs[index]
        img_i, img_j = sample["image"], sample["image_ref"]
        if random.random() < self.swap_p:
            img_i, img_j = img_j, img_i
        _, h, w = img_i.shape
        flow = random_flow(h, w, self.warps)
        prime = normalize(self.photometric(denormalize(img_i)))
        prime, mask = warp(prime[None], flow[None], return_mask=True)
        mask = mask[0]
        inclusive = inbounds_mask(flow[None])[0]
        if inclusive.float().mean() < self.min_valid_fraction:
            mask = inclusive
        out = {
            "image": img_i,
            "image_ref": img_j,
            "image_prime": prime[0],
            "flow_prime": flow,
            "mask_prime": mask,
        }
        if self.crop_size:
            ch, cw = self.crop_size
            top, left = round((h - ch) / 2), round((w - cw) / 2)
            out = {k: v[..., top : top + ch, left : left + cw] for k, v in out.items()}
        return out
