"""The matcher's warp-consistency training as a method of the engine (docs/uawarpc.md#training).

``MatcherTraining`` follows the engine's
method contract, so ``refign.align_train`` gets resume, DDP, AMP, the non-finite-loss guard and the metrics
files from ``refign.engine.trainer`` like the segmentation training does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from refign.alignment.evaluate import evaluate, identity_baseline
from refign.alignment.network import AlignmentNetwork
from refign.alignment.training.losses import balance_weights, bipath_loss, warp_supervision_loss


def split_pyramids(network: AlignmentNetwork, images: list[torch.Tensor]) -> list:
    """Frozen features of several equally sized batches in one backbone call, split back per batch."""
    b = images[0].shape[0]
    full, small = network.pyramids(torch.cat(images))
    return [
        ([f[i * b : (i + 1) * b] for f in full], [f[i * b : (i + 1) * b] for f in small])
        for i in range(len(images))
    ]


def warp_consistency_step(
    network: AlignmentNetwork, batch: dict, visibility_mask: bool, loss_weighting: str
) -> dict[str, torch.Tensor]:
    """Three head passes (I′→I, I′→J, J→I) and the weighted warp-supervision + bipath losses: ``loss`` (the
    weighted sum), ``loss_ss`` and ``loss_us`` (detached, unweighted)."""
    img_i, img_j, prime = batch["image"], batch["image_ref"], batch["image_prime"]
    flow, mask = batch["flow_prime"], batch["mask_prime"]
    size = tuple(img_i.shape[-2:])
    pyr_i, pyr_j, pyr_p = split_pyramids(network, [img_i, img_j, prime])
    prime_i = network.head_levels(pyr_p, pyr_i, size)
    prime_j = network.head_levels(pyr_p, pyr_j, size)
    j_i = network.head_levels(pyr_j, pyr_i, size)
    loss_ss = warp_supervision_loss(prime_i, flow, mask)
    loss_us = bipath_loss(prime_j, j_i, flow, mask, visibility_mask=visibility_mask)
    w_ss, w_us = balance_weights(loss_ss, loss_us, loss_weighting)
    return {"loss": w_ss * loss_ss + w_us * loss_us, "loss_ss": loss_ss.detach(), "loss_us": loss_us.detach()}


class MatcherTraining(nn.Module):
    """``method(batch, step, backward)`` for the engine: the weighted loss handed to ``backward`` as
    ``warpc`` (its only loss), the two unweighted terms returned as ``ss`` / ``us`` (logged only); the
    evaluated and stored network is the matcher.

    Args:
        network: the matcher being trained (its frozen pyramid stays frozen).
        visibility_mask: the bipath loss's visibility mask (stage 2).
        loss_weighting: ``official`` | ``intended`` (docs/quirks.md#w1).
    """

    loss_names = ("warpc",)

    def __init__(self, network: AlignmentNetwork, visibility_mask: bool, loss_weighting: str) -> None:
        super().__init__()
        self.network = network
        self.visibility_mask, self.loss_weighting = visibility_mask, loss_weighting

    def forward(
        self, batch: dict[str, torch.Tensor], step: int, backward: Callable[[str, torch.Tensor], None]
    ) -> dict[str, torch.Tensor]:
        out = warp_consistency_step(self.network, batch, self.visibility_mask, self.loss_weighting)
        backward("warpc", out["loss"])
        return {"ss": out["loss_ss"], "us": out["loss_us"]}

    def inference_model(self) -> AlignmentNetwork:
        return self.network


def matcher_eval(
    dataset: Dataset, name: str, device: torch.device, with_identity: bool
) -> Callable[[nn.Module, Callable], tuple[dict, dict[str, float]]]:
    """The engine's evaluation for the matcher: PCK / AEPE on ``dataset`` (and, for dense ground truth,
    the zero flow's as ``identity_*``), logged as ``val/<name>/<metric>``. Computed on the main process's
    device over the whole set (evaluation is cheap next to training)."""

    def run(model: nn.Module, autocast: Callable = contextlib.nullcontext) -> tuple[dict, dict[str, float]]:
        was_training = model.training
        metrics = evaluate(model, dataset, device)
        model.train(was_training)
        if with_identity:
            metrics |= {f"identity_{k}": v for k, v in identity_baseline(dataset).items()}
        return metrics, {f"val/{name}/{k}": v for k, v in metrics.items()}

    return run
