"""A stand-in matcher that returns the dataset's ground-truth flow (synthetic benchmark only).

It isolates the refinement from the matching: an upper bound for Refign on the synthetic benchmark, and a
way to check a warp/refine port without a trained matcher (the failure users of ported Refign code report).
"""

from __future__ import annotations

import torch
from torch import nn


class GroundTruthFlow(nn.Module):
    """``(image_trg, image_ref, flow, flow_valid) -> (flow, certainty)`` with certainty 1 where the ground
    truth says the correspondence is valid (static structure visible in both views) and 0 elsewhere."""

    needs_gt_flow = True

    def forward(
        self, image_trg: torch.Tensor, image_ref: torch.Tensor, flow: torch.Tensor, flow_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return flow.float(), flow_valid[:, None].float()
