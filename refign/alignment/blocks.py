"""Building blocks of the UAWarpC head (spec 02 §1.6–1.8).

Attribute names (``conv``/``bn``, ``conv_0`` … ``predict_mapping``, ``dc_convs``, ``pred_conv_*``) are the
official ones: they form the state-dict keys of the released ``uawarpc_megadepth.ckpt``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

LEAKY_SLOPE = 0.1


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
    32-channel last feature. The skips take pre-activation tensors, as in the official decoder."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv_0 = ConvBN(in_channels, 128, act=False)
        self.conv0_skip = ConvBN(128, 96, kernel_size=1, act=False)
        self.conv_1 = ConvBN(128, 128)
        self.conv_2 = ConvBN(128, 96, act=False)
        self.conv2_skip = ConvBN(96, 32, kernel_size=1, act=False)
        self.conv_3 = ConvBN(96, 64)
        self.conv_4 = ConvBN(64, 32, act=False)
        self.predict_mapping = nn.Conv2d(32, 2, 3, padding=1)
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

    def __init__(self) -> None:
        super().__init__()
        convs = [ConvBN(cin, cout, dilation=d) for cin, cout, d in self.DILATIONS]
        self.dc_convs = nn.Sequential(*convs, nn.Conv2d(32, 2, 3, padding=1))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.dc_convs(feat)


class UncertaintyModule(nn.Module):
    """Predicts one log-variance channel (isotropic 2-D Gaussian) per pixel.

    Each pixel's correlation vector is read as an s×s patch and shrunk to 6 numbers by unpadded convs; they
    are fused with the decoder feature (and, at levels 3–1, the previous log-variance and flow).

    Args:
        search_size: side of the correlation patch: 16 (global level) or 9 (local levels).
        feed_in_previous: also take the upsampled previous log-variance (1 ch) and flow (2 ch).
    """

    def __init__(self, search_size: int, feed_in_previous: bool) -> None:
        super().__init__()
        if search_size not in (9, 16):
            raise ValueError(f"search_size must be 9 or 16, got {search_size}")
        self.search_size = search_size
        self.feed_in_previous = feed_in_previous
        self.conv_0 = ConvBN(1, 32, padding=0)
        self.maxpool = nn.MaxPool2d(2) if search_size == 16 else nn.Identity()
        self.conv_1 = ConvBN(32, 32, padding=0)
        self.conv_2 = ConvBN(32, 16, padding=0)
        self.predict_uncertainty = nn.Conv2d(16, 6, 3)
        self.pred_conv_0 = ConvBN(6 + 32 + (3 if feed_in_previous else 0), 32)
        self.pred_conv_1 = ConvBN(32, 16)
        self.predict_uncertainty_final = nn.Conv2d(16, 1, 3, padding=1)

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
        x = self.conv_2(self.conv_1(self.maxpool(self.conv_0(patches))))
        x = self.predict_uncertainty(x).view(b, h, w, 6).permute(0, 3, 1, 2)
        parts = [x, feat]
        if self.feed_in_previous:
            parts += [prev_logvar, prev_flow]
        return self.predict_uncertainty_final(self.pred_conv_1(self.pred_conv_0(torch.cat(parts, 1))))
