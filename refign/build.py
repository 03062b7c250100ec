"""The one place that turns a composed configuration into objects and wires them together."""

from __future__ import annotations

import inspect
import logging

from hydra.errors import InstantiationException
from hydra.utils import get_class, get_object
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig
from torch.utils.data import Dataset

from refign.models.segmentor import Segmentor
from refign.models.weights import init_segmentor
from refign.uda.base import UDAMethod

log = logging.getLogger(__name__)


def build_segmentor(cfg: DictConfig) -> Segmentor:
    """Backbone + head (+ HRDA's attention); ``init_weights`` replaces the fresh weights by a file's, before
    any method copies the segmentor (so the EMA teacher and the frozen feature-distance copy start from it)."""
    backbone = instantiate(cfg.backbone)
    head = instantiate(cfg.head, in_channels=list(backbone.out_channels), num_classes=cfg.dataset.num_classes)
    segmentor = instantiate(cfg.model, backbone=backbone, head=head)
    if cfg.get("init_weights"):
        fresh = init_segmentor(segmentor, cfg.init_weights)
        log.info(
            "initialised the segmentor from %s%s",
            cfg.init_weights,
            f" (fresh: {len(fresh)} tensors)" * bool(fresh),
        )
    return segmentor


class ConfigError(ValueError):
    """A configuration whose parts cannot work together."""


def instantiate(node, *args, **kwargs):
    """``hydra.utils.instantiate`` that lets the project's own errors through unwrapped, so that the user
    reads "weight file not found: X" rather than a Hydra traceback around it."""
    try:
        return hydra_instantiate(node, *args, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError | KeyError | RuntimeError | OSError):
            raise err.__cause__ from None
        raise


def build_pseudo_labeler(cfg: DictConfig):
    """Refign's aligner + refiner (``refign=on``), or None for the method's own pseudo-labels."""
    if not cfg.get("refine"):
        return None
    if "pseudo_labeler" not in inspect.signature(get_class(cfg.uda._target_)).parameters:
        raise ConfigError(
            f"refign=on needs a self-training method (uda=dacs|daformer|hrda); "
            f"{cfg.uda._target_} produces no pseudo-labels to refine"
        )
    keys = cfg.dataset.train_target.get("load_keys", [])
    if "image_ref" not in keys:
        raise ConfigError(
            f"refign=on needs reference images ('image_ref'), but dataset {cfg.dataset.name!r} loads "
            f"{list(keys)} for its training target (dataset.train_target.load_keys)"
        )
    aligner = None
    if cfg.refine.use_align:
        if getattr(get_object(cfg.alignment._target_), "needs_gt_flow", False):
            if not {"flow", "flow_valid"} <= set(keys):
                raise ConfigError(
                    "alignment=oracle reads the ground-truth flow: add "
                    "dataset.train_target.load_keys=[image,image_ref,flow,flow_valid]"
                )
        elif not cfg.alignment.get("checkpoint"):
            raise ConfigError(
                "refign=on aligns with a trained matcher: set alignment.checkpoint=<file> "
                "(the released uawarpc_megadepth.ckpt, or one from python -m refign.align_train)"
            )
        aligner = instantiate(cfg.alignment)
    return instantiate(cfg.refine, aligner=aligner)


def build_method(cfg: DictConfig) -> UDAMethod:
    labeler = build_pseudo_labeler(cfg)
    extra = {"pseudo_labeler": labeler} if labeler is not None else {}
    return instantiate(cfg.uda, model=build_segmentor(cfg), _recursive_=False, **extra)


def build_datasets(cfg: DictConfig, node: str) -> dict[str, Dataset]:
    """All datasets under ``cfg.dataset.<node>`` (``val`` or ``test``), by name."""
    return {name: instantiate(spec) for name, spec in (cfg.dataset.get(node) or {}).items()}


def build_train_sets(cfg: DictConfig, needs_target: bool) -> tuple[Dataset, Dataset | None]:
    source = instantiate(cfg.dataset.train_source)
    if cfg.get("rcs"):  # rcs=on: rare class sampling wraps the source set
        source = instantiate(cfg.rcs, dataset=source)
    target = instantiate(cfg.dataset.train_target) if needs_target else None
    return source, target
