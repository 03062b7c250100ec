"""Frozen VGG-16 feature pyramid for the matcher (docs/uawarpc.md#vgg-backbone).

The cut points are the outputs of pool2, pool3 and pool4 (modules ``features[0:10]``, ``[10:17]``,
``[17:24]``); the full 31-module ``features`` stack is kept so that state-dict keys match torchvision's
``vgg16-397923af.pth`` and the official ``alignment_backbone.features.*`` entries.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from refign.models.weights import CheckpointError, load_strict, read_state_dict

CUT_POINTS = (10, 17, 24)  # pool2 (stride 4, 128 ch), pool3 (stride 8, 256 ch), pool4 (stride 16, 512 ch)


class VGGPyramid(nn.Module):
    """VGG-16 without batch norm; ``forward`` returns the requested pool outputs, frozen by default.

    Args:
        weights: path to torchvision ImageNet VGG-16 weights (``classifier.*`` entries are ignored);
            None leaves the random initialisation (tests, or when a full matcher checkpoint follows).
        frozen: disable gradients for all parameters (the official matcher never trains its backbone).
    """

    def __init__(self, weights: str | os.PathLike | None = None, frozen: bool = True) -> None:
        super().__init__()
        self.features = make_layers(cfgs["D"], batch_norm=False)  # torchvision's vgg16 ``features``
        if weights is not None:
            self.load_weights(weights)
        if frozen:
            self.requires_grad_(False)

    def load_weights(self, path: str | os.PathLike) -> None:
        state = read_state_dict(path)
        for prefix in ("alignment_backbone.", "backbone."):
            if any(k.startswith(prefix + "features.") for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        state = {k: v for k, v in state.items() if k.startswith("features.")}
        if not state:
            raise CheckpointError(f"{path} holds no VGG-16 'features.*' weights")
        load_strict(self, state, str(path))

    def forward(self, x: torch.Tensor, levels: Sequence[int]) -> list[torch.Tensor]:
        """Outputs at ``levels`` (indices into pool2/pool3/pool4, negative allowed), shallow to deep."""
        cuts = sorted(CUT_POINTS[i] for i in levels)
        outs, start = [], 0
        for cut in cuts:
            x = self.features[start:cut](x)
            outs.append(x)
            start = cut
        return outs
