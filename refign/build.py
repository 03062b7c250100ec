"""The one place that turns a composed configuration into objects and wires them together."""

from __future__ import annotations

import logging

from hydra.errors import InstantiationException
from hydra.utils import get_class, get_object
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig
from torch.utils.data import Dataset

from refign.engine.checkpoint import mark_rebuilt
from refign.models.segmentor import Segmentor
from refign.models.weights import CheckpointError, init_segmentor
from refign.uda.base import UDAMethod

log = logging.getLogger(__name__)


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


def build_segmentor(cfg: DictConfig) -> Segmentor:
    """Backbone + head (+ HRDA's attention); ``init_weights`` replaces the fresh weights by a file's, before
    any method copies the segmentor (so the EMA teacher and the frozen feature-distance copy start from it)."""
    backbone = instantiate(cfg.backbone)
    head = instantiate(cfg.head, in_channels=list(backbone.out_channels), num_classes=cfg.dataset.num_classes)
    segmentor = instantiate(cfg.model, backbone=backbone, head=head)
    if cfg.get("init_weights"):
        try:
            fresh = init_segmentor(segmentor, cfg.init_weights)
        except CheckpointError as err:
            # the usual cause: a dataset's shipped start (e.g. the synthetic benchmark's) with another model
            raise CheckpointError(
                f"{err}. init_weights={cfg.init_weights} was saved from another model than the configured "
                "backbone/head; point init_weights to weights of this model, or set init_weights=null "
                "(fresh head, backbone from its own `pretrained` file)"
            ) from None
        log.info(
            "initialised the segmentor from %s%s", cfg.init_weights, f" ({len(fresh)} fresh)" * bool(fresh)
        )
    return segmentor


def method_class(cfg: DictConfig) -> type[UDAMethod]:
    """The class ``uda._target_`` names; its class attributes say what it can do (see ``UDAMethod``)."""
    cls = get_class(cfg.uda._target_)
    if not (isinstance(cls, type) and issubclass(cls, UDAMethod)):
        raise ConfigError(f"uda._target_={cfg.uda._target_} is not a UDAMethod")
    return cls


def refign_enabled(cfg: DictConfig) -> bool:
    """The one switch: ``refign=on`` sets ``refign.enabled`` and brings the ``alignment``/``refine`` nodes.

    Either half without the other is refused, so that Refign is never switched on (or silently left off)
    by the mere presence of a ``refine`` node, e.g. from ``+ablation=rowN``.
    """
    enabled = bool(cfg.get("refign", {}).get("enabled", False))
    if enabled and cfg.get("refine") is None:
        raise ConfigError("refign.enabled=true without Refign's refine/alignment nodes: select refign=on")
    if not enabled and cfg.get("refine") is not None:
        raise ConfigError(
            "refine.* is set (e.g. by +ablation=rowN) but Refign is off: add refign=on "
            "(the ablation rows configure Refign and do not switch it on)"
        )
    return enabled


def build_pseudo_labeler(cfg: DictConfig):
    """Refign's aligner + refiner (``refign=on``), or None for the method's own pseudo-labels."""
    if not refign_enabled(cfg):
        return None
    method = method_class(cfg)
    if not method.self_training:
        raise ConfigError(
            f"refign=on refines the pseudo-labels of a self-training method, but {method.__name__} "
            f"(uda._target_={cfg.uda._target_}) does not self-train: choose a self-training uda "
            f"(e.g. uda=daformer)"
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
        # frozen and rebuilt from its file: checkpoints keep its fingerprint, not its weights
        ckpt = cfg.alignment.get("checkpoint")
        source = f"alignment.checkpoint={ckpt}" if ckpt else f"alignment._target_={cfg.alignment._target_}"
        aligner = mark_rebuilt(instantiate(cfg.alignment), source)
    return instantiate(cfg.refine, aligner=aligner)


def build_mic(cfg: DictConfig):
    """Masked Image Consistency (``mic=on``, ``refign/uda/mic.py``), or None (``mic=off``: an empty node)."""
    if not cfg.get("mic"):
        return None
    method = method_class(cfg)
    if not method.self_training:
        raise ConfigError(
            f"mic=on trains on the pseudo-labels of a self-training method, but {method.__name__} "
            f"(uda._target_={cfg.uda._target_}) makes none: choose a self-training uda (e.g. uda=daformer) "
            f"or mic=off"
        )
    return instantiate(cfg.mic)


def build_method(cfg: DictConfig) -> UDAMethod:
    labeler = build_pseudo_labeler(cfg)
    extra = {"pseudo_labeler": labeler} if labeler is not None else {}
    mic = build_mic(cfg)
    if mic is not None:
        extra["mic"] = mic
    return instantiate(cfg.uda, model=build_segmentor(cfg), _recursive_=False, **extra)


def build_datasets(cfg: DictConfig, node: str) -> dict[str, Dataset]:
    """All datasets under ``cfg.dataset.<node>`` (``val``, ``test`` or ``predict``), by name."""
    return {name: instantiate(spec) for name, spec in (cfg.dataset.get(node) or {}).items()}


def check_reference_pairs(target: Dataset) -> None:
    """Refign warps reference onto target pixel for pixel: both must come in the same size."""
    sample = target[0]
    a, b = tuple(sample["image"].shape), tuple(sample["image_ref"].shape)
    if a != b:
        raise ConfigError(
            f"target {sample.get('filename', '#0')} is {a} but its reference is {b}: "
            f"refign=on needs target/reference pairs of equal size (set the dataset's dims)"
        )


def build_train_sets(cfg: DictConfig) -> tuple[Dataset, Dataset | None]:
    """The source set (wrapped by rare class sampling with ``rcs=on``) and, for methods that train on the
    target (``needs_target``), the target set."""
    source = instantiate(cfg.dataset.train_source)
    if cfg.get("rcs"):  # rcs=on: rare class sampling wraps the source set
        source = instantiate(cfg.rcs, dataset=source)
    if not method_class(cfg).needs_target:
        return source, None
    target = instantiate(cfg.dataset.train_target)
    if refign_enabled(cfg):
        check_reference_pairs(target)
    return source, target
