"""Building blocks of the UAWarpC head (docs/uawarpc.md#head-blocks).

Attribute names (``conv``/``bn``, ``conv_0`` … ``predict_mapping``, ``dc_convs``, ``pred_conv_*``) are the
official ones: they form the state-dict keys of the released ``uawarpc_megadepth.ckpt``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.1


def scaled(channels: int, width: float) -> int:
    """A layer's channel count under the head's width factor (1.0 = official)."""
    return max(4, round(channels * width))


class ConvBN(nn.Sequential):
    """Conv (no bias) → BatchNorm → optional LeakyReLU(0.1); 'same' padding unless given."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        dilation: int = 1,
        padding: int | None = None,
        act: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2 if padding is None else padding
        layers = OrderedDict(
            {
                "conv": nn.Conv2d(cin, cout, kernel_size, padding=padding, dilation=dilation, bias=False),
                "bn": nn.BatchNorm2d(cout),
            }
        )
        if act:
            layers["act"] = nn.LeakyReLU(LEAKY_SLOPE)
        super().__init__(layers)


class FlowDecoder(nn.Module):
    """Residual CNN that regresses a 2-channel flow (or mapping) from a cost volume; also returns its
    32-channel (× width) last feature. The skips take pre-activation tensors, as in the official decoder."""

    def __init__(self, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        c128, c96, c64, c32 = (scaled(c, width) for c in (128, 96, 64, 32))
        self.conv_0 = ConvBN(in_channels, c128, act=False)
        self.conv0_skip = ConvBN(c128, c96, kernel_size=1, act=False)
        self.conv_1 = ConvBN(c128, c128)
        self.conv_2 = ConvBN(c128, c96, act=False)
        self.conv2_skip = ConvBN(c96, c32, kernel_size=1, act=False)
        self.conv_3 = ConvBN(c96, c64)
        self.conv_4 = ConvBN(c64, c32, act=False)
        self.predict_mapping = nn.Conv2d(c32, 2, 3, padding=1)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x0 = self.conv_0(x)
        a = self.conv_2(self.conv_1(self.act(x0))) + self.conv0_skip(x0)
        b = self.conv_4(self.conv_3(self.act(a))) + self.conv2_skip(a)
        feat = self.act(b)
        return self.predict_mapping(feat), feat


class RefinementModule(nn.Module):
    """Dilated context network adding a flow correction from the decoder feature."""

    DILATIONS = ((32, 128, 1), (128, 128, 2), (128, 128, 4), (128, 96, 8), (96, 64, 16), (64, 32, 1))

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        convs = [
            ConvBN(scaled(cin, width), scaled(cout, width), dilation=d) for cin, cout, d in self.DILATIONS
        ]
        self.dc_convs = nn.Sequential(*convs, nn.Conv2d(scaled(32, width), 2, 3, padding=1))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.dc_convs(feat)


class UncertaintyModule(nn.Module):
    """Predicts one log-variance channel (isotropic 2-D Gaussian) per pixel.

    Each pixel's correlation vector is read as an s×s patch and shrunk to 6 numbers by unpadded convs; they
    are fused with the decoder feature (and, at levels 3–1, the previous log-variance and flow).

    Args:
        search_size: side of the correlation patch: 16 (global level of the official 256² coarse branch),
            9 (local levels), or below 9 for the global level of a smaller coarse branch — such a patch is
            zero-padded to 9×9 (zero = no correlation) so that the same unpadded convs reduce it to one
            value per pixel.
        feed_in_previous: also take the upsampled previous log-variance (1 ch) and flow (2 ch).
        width: channel factor (1.0 = official) of these convs and of the decoder feature they fuse.
    """

    def __init__(self, search_size: int, feed_in_previous: bool, width: float = 1.0) -> None:
        super().__init__()
        if search_size != 16 and not 1 <= search_size <= 9:
            raise ValueError(f"search_size must be 16 or 1…9, got {search_size}")
        self.search_size = search_size
        self.pad = max(0, 9 - search_size)
        self.feed_in_previous = feed_in_previous
        c32, c16 = scaled(32, width), scaled(16, width)
        self.conv_0 = ConvBN(1, c32, padding=0)
        self.maxpool = nn.MaxPool2d(2) if search_size == 16 else nn.Identity()
        self.conv_1 = ConvBN(c32, c32, padding=0)
        self.conv_2 = ConvBN(c32, c16, padding=0)
        self.predict_uncertainty = nn.Conv2d(c16, 6, 3)
        self.pred_conv_0 = ConvBN(6 + c32 + (3 if feed_in_previous else 0), c32)
        self.pred_conv_1 = ConvBN(c32, c16)
        self.predict_uncertainty_final = nn.Conv2d(c16, 1, 3, padding=1)

    def forward(
        self,
        corr: torch.Tensor,
        feat: torch.Tensor,
        prev_logvar: torch.Tensor | None = None,
        prev_flow: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, _, h, w = corr.shape
        s = self.search_size
        patches = corr.permute(0, 2, 3, 1).reshape(b * h * w, 1, s, s)
        if self.pad:
            patches = F.pad(patches, (self.pad // 2, self.pad - self.pad // 2) * 2)
        x = self.conv_2(self.conv_1(self.maxpool(self.conv_0(patches))))
        x = self.predict_uncertainty(x).view(b, h, w, 6).permute(0, 3, 1, 2)
        parts = [x, feat]
        if self.feed_in_previous:
            parts += [prev_logvar, prev_flow]
        return self.predict_uncertainty_final(self.pred_conv_1(self.pred_conv_0(torch.cat(parts, 1))))
