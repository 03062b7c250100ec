"""The segmentation training (``refign.train``): the segmentor, the UDA method with its pseudo-labeler and MIC,
the datasets and their batches, the mIoU evaluation and the trainer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from refign.build.common import (
    build_logger,
    build_train_step,
    instantiate,
    instantiate_switched,
    training_settings,
)
from refign.build.matcher import needs_gt_flow, trained_matcher
from refign.data.loader import merge_domains, step_loader
from refign.engine.dist import DistInfo
from refign.engine.evaluator import segmentation_eval
from refign.engine.trainer import Trainer
from refign.models.segmentor import Segmentor
from refign.models.weights import CheckpointError, WeightsMismatchError, init_segmentor
from refign.uda.base import UDAMethod
from refign.utils.errors import ConfigError
from refign.utils.safe_load import UnsafeFileError

log = logging.getLogger(__name__)


def build_segmentor(cfg: DictConfig) -> Segmentor:
    """Backbone + head (+ HRDA's attention); ``init_weights`` replaces the fresh weights by a file's, before
    any method copies the segmentor (so the EMA teacher and the frozen feature-distance copy start from it)."""
    backbone = instantiate(cfg.backbone)
    head = instantiate(cfg.head, in_channels=list(backbone.out_channels), num_classes=cfg.dataset.num_classes)
    segmentor = instantiate(cfg.model, backbone=backbone, head=head)
    if cfg.get("init_weights"):
        try:
            fresh = init_segmentor(segmentor, cfg.init_weights)
        except WeightsMismatchError as err:
            # the usual cause: a dataset's shipped start (e.g. the synthetic benchmark's) with another model
            raise WeightsMismatchError(
                f"{err}. init_weights={cfg.init_weights} was saved from another model than the configured "
                "backbone/head; point init_weights to weights of this model, or set init_weights=null "
                "(fresh head, backbone from its own `pretrained` file)"
            ) from None
        except UnsafeFileError:
            raise  # refused unread: its message names the file and how to convert it
        except CheckpointError as err:  # a missing or unreadable file: say which setting names it
            raise CheckpointError(f"init_weights: {err}") from None
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


def require_self_training(cfg: DictConfig, what: str, lacks: str, hint: str = "") -> None:
    """Refuse a switch that works on the pseudo-labels (``what``) when the method makes none."""
    method = method_class(cfg)
    if not method.self_training:
        raise ConfigError(
            f"{what} of a self-training method, but {method.__name__} (uda._target_={cfg.uda._target_}) "
            f"{lacks}: choose a self-training uda (e.g. uda=daformer){hint}"
        )


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
    require_self_training(cfg, "refign=on refines the pseudo-labels", "does not self-train")
    aligner = trained_matcher(cfg, "refign=on aligns with") if cfg.refine.use_align else None
    # frozen and rebuilt from its file: checkpoints keep its fingerprint, not its weights
    ckpt = cfg.alignment.get("checkpoint")
    source = f"alignment.checkpoint={ckpt}" if ckpt else f"alignment._target_={cfg.alignment._target_}"
    return instantiate(cfg.refine, aligner=aligner, aligner_source=source)


def target_load_keys(cfg: DictConfig) -> list[str]:
    """What the training target set loads: the dataset's own keys plus what the configured components read
    (Refign: the reference image; the oracle aligner: the ground-truth flow and its validity)."""
    keys = list(cfg.dataset.train_target.load_keys)
    if refign_enabled(cfg):
        keys.append("image_ref")
        if cfg.refine.use_align and needs_gt_flow(cfg):
            keys += ["flow", "flow_valid"]
    return list(dict.fromkeys(keys))


def build_mic(cfg: DictConfig):
    """Masked Image Consistency (``mic=on``, ``refign/uda/mic.py``), or None (``mic=off``)."""
    if not cfg.mic.enabled:
        return None
    require_self_training(cfg, "mic=on trains on the pseudo-labels", "makes none", " or mic=off")
    return instantiate_switched(cfg.mic)


def build_method(cfg: DictConfig) -> UDAMethod:
    """The configured method with its networks."""
    parts = {"pseudo_labeler": build_pseudo_labeler(cfg), "mic": build_mic(cfg)}
    extra = {name: part for name, part in parts.items() if part is not None}
    return instantiate(cfg.uda, model=build_segmentor(cfg), _recursive_=False, **extra)


def build_datasets(cfg: DictConfig, node: str) -> dict[str, Dataset]:
    """All datasets under ``cfg.dataset.<node>`` (``val``, ``test`` or ``predict``), by name."""
    return {name: instantiate(spec) for name, spec in (cfg.dataset.get(node) or {}).items()}


def build_train_sets(cfg: DictConfig) -> tuple[Dataset, Dataset | None]:
    """The source set (wrapped by rare class sampling with ``rcs=on``) and, for methods that train on the
    target (``needs_target``), the target set."""
    source = instantiate(cfg.dataset.train_source)
    source = instantiate_switched(cfg.rcs, dataset=source) or source  # rcs=on wraps the source set
    if not method_class(cfg).needs_target:
        return source, None
    target = instantiate(cfg.dataset.train_target, load_keys=target_load_keys(cfg))
    if refign_enabled(cfg):  # Refign warps reference onto target pixel for pixel: both of one size
        sample = target[0]
        a, b = tuple(sample["image"].shape), tuple(sample["image_ref"].shape)
        if a != b:
            raise ConfigError(
                f"target {sample.get('filename', '#0')} is {a} but its reference is {b}: "
                f"refign=on needs target/reference pairs of equal size (set the dataset's dims)"
            )
    return source, target


def build_segmentation_eval(cfg: DictConfig, info: DistInfo, split: str, required: bool = False):
    """mIoU on every dataset of ``cfg.dataset.<split>`` (``val`` during training, or ``test``):
    ``(model, autocast) -> (results by set, logged scalars)``; ``required``: a split without datasets is an
    error (``refign.evaluate``) rather than nothing to evaluate (a training run)."""
    datasets = build_datasets(cfg, split)
    if not datasets and required:
        raise ValueError(f"dataset {cfg.dataset.name!r} has no '{split}' split with labels")
    return segmentation_eval(
        datasets,
        info,
        cfg.dataset.num_classes,
        cfg.trainer.eval_batch_size,
        cfg.trainer.num_workers,
        cfg.dataset.over_present_classes,
    )


def build_trainer(cfg: DictConfig, run_dir: Path, info: DistInfo) -> Trainer:
    """A segmentation run: the method, its data, optimiser, schedule, logger and mIoU evaluation."""
    loop = training_settings(cfg)
    method = build_method(cfg).to(info.device)  # before the optimiser, which picks its kernel by device
    source, target = build_train_sets(cfg)
    step = build_train_step(cfg, method, info, settings=loop)

    def batches(start: int) -> Iterator[dict]:
        """The source and (``needs_target``) target loaders, each a pure function of (seed, step, rank),
        merged into one dict per step."""

        def loader(dataset: Dataset, seed: int) -> Iterator[dict]:
            return step_loader(dataset, cfg.dataset.batch_size, info, seed, start, cfg.trainer.num_workers)

        src = loader(source, cfg.seed)
        trg = loader(target, cfg.seed + 1) if target is not None else None
        while True:
            yield merge_domains(next(src), next(trg) if trg is not None else None)

    return Trainer(
        loop,
        step,
        batches=batches,
        evaluate=build_segmentation_eval(cfg, info, "val"),
        dist_info=info,
        run_dir=run_dir,
        logger=build_logger(cfg, run_dir, info, "train", step.optimizer),
        resolved_config=OmegaConf.to_container(cfg, resolve=True),
    )
