"""The one place that turns a composed configuration into objects and wires them together."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import Dataset

from refign.models.segmentor import Segmentor
from refign.uda.base import UDAMethod


def build_segmentor(cfg: DictConfig) -> Segmentor:
    backbone = instantiate(cfg.backbone)
    head = instantiate(cfg.head, in_channels=list(backbone.out_channels), num_classes=cfg.dataset.num_classes)
    return instantiate(cfg.model, backbone=backbone, head=head)


def build_method(cfg: DictConfig) -> UDAMethod:
    return instantiate(cfg.uda, model=build_segmentor(cfg), _recursive_=False)


def build_datasets(cfg: DictConfig, node: str) -> dict[str, Dataset]:
    """All datasets under ``cfg.dataset.<node>`` (``val`` or ``test``), by name."""
    return {name: instantiate(spec) for name, spec in (cfg.dataset.get(node) or {}).items()}


def build_train_sets(cfg: DictConfig, needs_target: bool) -> tuple[Dataset, Dataset | None]:
    source = instantiate(cfg.dataset.train_source)
    if cfg.get("rcs"):  # rcs=on: rare class sampling wraps the source set
        source = instantiate(cfg.rcs, dataset=source)
    target = instantiate(cfg.dataset.train_target) if needs_target else None
    return source, target
