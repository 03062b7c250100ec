"""Tiny models and method arguments for the UDA tests (CPU, milliseconds per step)."""

from __future__ import annotations

import functools

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from refign.engine.backward import LossBackward, MethodStep
from refign.models.segmentor import Segmentor
from tests.conftest import compose_cfg

NUM_CLASSES = 5


class TinyBackbone(nn.Module):
    """Four levels at strides 4, 8, 16, 32, like MiT."""

    out_channels = (8, 8, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.BatchNorm2d(8), nn.ReLU())
        self.stages = nn.ModuleList([nn.Conv2d(8, 8, 3, 2, 1) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(torch.relu(stage(feats[-1])))
        return feats


class TinyHead(nn.Module):
    """Classifier on the finest level (output stride 4), with dropout like the real heads."""

    def __init__(self, in_channels=(8, 8, 8, 8), num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(in_channels[0], num_classes, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(feats[0]))


def tiny_segmentor() -> Segmentor:
    return Segmentor(TinyBackbone(), TinyHead())


@functools.cache
def _uda_config(name: str) -> dict:
    cfg = compose_cfg([f"uda={name}", f"dataset.num_classes={NUM_CLASSES}"])
    return OmegaConf.to_container(cfg.uda, resolve=True)


def uda_kwargs(name: str, **overrides) -> dict:
    """The method's arguments from its real, composed config (``_target_`` removed)."""
    cfg = {k: v for k, v in _uda_config(name).items() if k != "_target_"}
    return {**cfg, **overrides}


def toy_batch(b: int = 2, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Source images whose class is readable from the colour, so a tiny net can learn it."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, NUM_CLASSES, (b, size // 16, size // 16), generator=g)
    label = label.repeat_interleave(16, 1).repeat_interleave(16, 2)
    palette = torch.randn(NUM_CLASSES, 3, generator=g)
    image = palette[label].permute(0, 3, 1, 2) + 0.1 * torch.randn(b, 3, size, size, generator=g)
    target = palette[label.flip(0)].permute(0, 3, 1, 2) * 0.8
    return {"image_src": image, "semantic_src": label, "image_trg": target, "image_ref": target.clone()}


def engine_step(
    method: nn.Module, batch: dict[str, torch.Tensor], step: int = 0, backward_type: type = LossBackward
) -> dict:
    """One step of ``method`` as the engine runs it in fp32 (each loss back-propagated as it is handed over,
    the gradients left in ``.grad``): its outputs, and its losses as ``loss_<name>``."""
    backward = backward_type(
        method.loss_names, type(method).__name__, torch.amp.GradScaler("cpu", enabled=False), "cpu"
    )
    out, last = MethodStep(method)(batch, step, backward)
    backward.backward_last(last)
    return out | {f"loss_{name}": loss for name, loss in backward.losses.items()}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
