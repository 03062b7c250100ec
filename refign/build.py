"""The composition root: the one place that turns a composed configuration into objects and wires them
together, for every entry point (docs/architecture.md#composition-root). Entry points set up the process
(distributed group, seed, run directory), call a ``build_*`` here, run what they got and close it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, get_object
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import Dataset

from refign.alignment.network import AlignmentNetwork
from refign.alignment.training.method import MatcherTraining, matcher_eval
from refign.alignment.training.pairs import WarpConsistencyPairs
from refign.alignment.training.synthetic_warps import WarpConfig
from refign.data.datasets.synthetic import SyntheticDataset
from refign.data.loader import merge_domains, step_loader
from refign.engine import checkpoint
from refign.engine.dist import DistInfo
from refign.engine.evaluator import segmentation_eval
from refign.engine.loggers import MetricLogger
from refign.engine.step import TrainStep
from refign.engine.trainer import Trainer, TrainerConfig
from refign.engine.wandb_run import identity
from refign.errors import ConfigError, check_number
from refign.models.segmentor import Segmentor
from refign.models.weights import CheckpointError, WeightsMismatchError, init_segmentor, load_strict
from refign.safe_load import UnsafeFileError
from refign.uda.base import UDAMethod

log = logging.getLogger(__name__)


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
    aligner = None
    if cfg.refine.use_align:
        if not needs_gt_flow(cfg) and not cfg.alignment.get("checkpoint"):
            raise ConfigError(
                "refign=on aligns with a trained matcher: set alignment.checkpoint=<file> "
                "(the released uawarpc_megadepth.ckpt, or one from python -m refign.align_train)"
            )
        aligner = instantiate(cfg.alignment)
    # frozen and rebuilt from its file: checkpoints keep its fingerprint, not its weights
    ckpt = cfg.alignment.get("checkpoint")
    source = f"alignment.checkpoint={ckpt}" if ckpt else f"alignment._target_={cfg.alignment._target_}"
    return instantiate(cfg.refine, aligner=aligner, aligner_source=source)


def needs_gt_flow(cfg: DictConfig) -> bool:
    """Whether the configured aligner reads the ground-truth flow (``alignment=oracle``)."""
    return bool(getattr(get_object(cfg.alignment._target_), "needs_gt_flow", False))


def target_load_keys(cfg: DictConfig) -> list[str]:
    """What the training target set loads: the dataset's own keys plus what the configured components read
    (Refign: the reference image; the oracle aligner: the ground-truth flow and its validity)."""
    keys = list(cfg.dataset.train_target.load_keys)
    if refign_enabled(cfg):
        keys.append("image_ref")
        if cfg.refine.use_align and needs_gt_flow(cfg):
            keys += ["flow", "flow_valid"]
    return list(dict.fromkeys(keys))


def instantiate_switched(node: DictConfig, **kwargs):
    """The object of a node with an ``enabled`` switch (``mic``, ``rcs``), or None when it is off; the switch
    itself is not a constructor argument."""
    if not node.enabled:
        return None
    spec = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "enabled"}
    return instantiate(spec, **kwargs)


def build_mic(cfg: DictConfig):
    """Masked Image Consistency (``mic=on``, ``refign/uda/mic.py``), or None (``mic=off``)."""
    if not cfg.mic.enabled:
        return None
    method = method_class(cfg)
    if not method.self_training:
        raise ConfigError(
            f"mic=on trains on the pseudo-labels of a self-training method, but {method.__name__} "
            f"(uda._target_={cfg.uda._target_}) makes none: choose a self-training uda (e.g. uda=daformer) "
            f"or mic=off"
        )
    return instantiate_switched(cfg.mic)


def build_method(cfg: DictConfig) -> UDAMethod:
    """The configured method with its networks."""
    labeler = build_pseudo_labeler(cfg)
    extra = {"pseudo_labeler": labeler} if labeler is not None else {}
    mic = build_mic(cfg)
    if mic is not None:
        extra["mic"] = mic
    return instantiate(cfg.uda, model=build_segmentor(cfg), _recursive_=False, **extra)


def build_datasets(cfg: DictConfig, node: str) -> dict[str, Dataset]:
    """All datasets under ``cfg.dataset.<node>`` (``val``, ``test`` or ``predict``), by name."""
    return {name: instantiate(spec) for name, spec in (cfg.dataset.get(node) or {}).items()}


def build_dataset(spec: DictConfig) -> Dataset:
    """One dataset node as configured (``refign.check_data``: the synthetic sets and matching csvs)."""
    return instantiate(spec)


def dataset_class(spec: DictConfig) -> type:
    return get_class(spec._target_)


def build_listing(spec: DictConfig, split: str, keys: list[str]):
    """``conditions -> dataset``: a real dataset's split listed with the files of ``keys``, without the
    loader's pairing check, resize or transform (``refign.check_data`` reports every gap itself)."""

    def listing(conditions: list[str] | None) -> Dataset:
        return instantiate(
            spec,
            split=split,
            load_keys=keys,
            conditions=conditions,
            check_pairs=False,
            dims=None,
            transform=None,
        )

    return listing


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
    source = instantiate_switched(cfg.rcs, dataset=source) or source  # rcs=on wraps the source set
    if not method_class(cfg).needs_target:
        return source, None
    target = instantiate(cfg.dataset.train_target, load_keys=target_load_keys(cfg))
    if refign_enabled(cfg):
        check_reference_pairs(target)
    return source, target


# ---- evaluation and prediction (refign.evaluate, refign.predict) -------------------------------------------
MODEL_NODES = ("backbone", "head", "model")


def build_inference_model(cfg: DictConfig) -> Segmentor:
    """The inference network of a training checkpoint: only the segmentor is rebuilt (no method, no matcher)
    and its weights are loaded strictly."""
    return _inference_model(cfg, checkpoint.load(cfg.checkpoint))


def build_predictor(cfg: DictConfig) -> tuple[Segmentor, int]:
    """The inference network and the short side its pictures are brought to (``refign.predict input=…``):
    ``cfg.short_side`` when set, else that of the target images the checkpoint's own configuration
    evaluates on (this composition's when the checkpoint stores none or ``use_checkpoint_config=false``)."""
    state = checkpoint.load(cfg.checkpoint)
    stored = OmegaConf.create(state["config"]) if cfg.use_checkpoint_config and state.get("config") else cfg
    return _inference_model(cfg, state), int(cfg.get("short_side") or evaluation_short_side(stored.dataset))


def evaluation_short_side(dataset: DictConfig) -> int:
    """The short side of the images a configuration evaluates on: its first test set's ``dims`` (540 for
    DAFormer's 540×960 ACDC), else that set's native size (HRDA*'s 1080, the synthetic benchmark's
    ``size``) — how the datasets scale target images at test time."""
    node = next(iter((dataset.get("test") or dataset.get("val") or {None: None}).values()))
    if node is None:
        raise ConfigError(
            f"dataset {dataset.get('name')!r} has no test or val set to take the scale from: set short_side"
        )
    dims = node.get("dims") or node.get("size") or get_class(node._target_).orig_dims
    return int(min(dims))


def _inference_model(cfg: DictConfig, state: dict) -> Segmentor:
    weights = checkpoint.segmentor_state(state, str(cfg.checkpoint))
    if cfg.use_checkpoint_config and state.get("config"):
        stored = OmegaConf.create(state["config"])
        with open_dict(cfg):
            for node in MODEL_NODES:
                cfg[node] = stored[node]
            # checkpoints from before model.slide_batch: their batched_slide=true ran every window in one
            # pass; they now get the default (docs/performance.md#eval-memory), the logits are the same
            cfg.model.pop("batched_slide", None)
            cfg.dataset.num_classes = stored.dataset.num_classes
    with open_dict(cfg):  # every weight comes from the checkpoint: do not read the initialisation files
        cfg.backbone.pretrained = None
        cfg.init_weights = None
    model = build_segmentor(cfg)
    load_strict(model, weights, str(cfg.checkpoint))
    return model


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


# ---- segmentation training (refign.train) ----------------------------------------------------------------
def build_batches(cfg: DictConfig, source: Dataset, target: Dataset | None, info: DistInfo):
    """``start_step -> iterator`` of the method's batches: the source and (``needs_target``) target loaders,
    each a pure function of (seed, step, rank), merged into one dict per step."""

    def batches(start: int) -> Iterator[dict]:
        def loader(dataset: Dataset, seed: int) -> Iterator[dict]:
            return step_loader(dataset, cfg.dataset.batch_size, info, seed, start, cfg.trainer.num_workers)

        src = loader(source, cfg.seed)
        trg = loader(target, cfg.seed + 1) if target is not None else None
        while True:
            yield merge_domains(next(src), next(trg) if trg is not None else None)

    return batches


def build_logger(
    cfg: DictConfig,
    run_dir: Path,
    info: DistInfo,
    job_type: str,
    optimizer: torch.optim.Optimizer | None = None,
) -> MetricLogger:
    """``metrics.jsonl`` in the run directory, plus wandb when ``logger.wandb`` is set: named, grouped and
    tagged as its sweep point (``refign.engine.wandb_run.identity``), ``job_type`` the entry point; the
    dashboard shows ``optimizer``'s learning rates."""
    wandb = cfg.logger.wandb
    init = OmegaConf.to_container(wandb, resolve=True) | identity(cfg, job_type) if wandb else None
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return MetricLogger(run_dir, info.is_main, init, resolved, optimizer)


def build_optimizer(cfg: DictConfig, method: torch.nn.Module) -> torch.optim.Optimizer:
    """The ``optim`` group's optimiser over ``method`` (already on its device: the kernel depends on it)."""
    return instantiate(cfg.optim, method)


def build_schedule(cfg: DictConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """The ``schedule`` group's learning-rate schedule over ``trainer.max_steps``."""
    return instantiate(cfg.schedule, optimizer, max_steps=cfg.trainer.max_steps)


def build_train_step(
    cfg: DictConfig, method: torch.nn.Module, info: DistInfo, precision: str | None = None
) -> TrainStep:
    """One optimiser step of ``method`` with the configured optimiser, schedule and ``trainer.*`` step options
    (``precision`` overrides ``trainer.precision``): what both trainings run, and what the estimator and the
    benchmarks call on batches they make."""
    settings = TrainerConfig(**cfg.trainer)
    optimizer = build_optimizer(cfg, method)
    return TrainStep(
        method,
        optimizer,
        build_schedule(cfg, optimizer),
        info,
        precision=str(settings.precision) if precision is None else precision,
        grad_clip=settings.grad_clip,
        sync_batchnorm=settings.sync_batchnorm,
        find_unused_parameters=settings.find_unused_parameters,
    )


def training_settings(cfg: DictConfig) -> TrainerConfig:
    """The loop's settings (``TrainerConfig`` checks its numbers), with the learning rate, weight decay and
    batch size checked too: a bad value is refused, naming its key, before anything is built or written."""
    loop = TrainerConfig(**cfg.trainer)
    check_number("optim.lr", cfg.optim.lr, 0, strict=True)
    check_number("optim.weight_decay", cfg.optim.weight_decay, 0, strict=False)
    check_number("dataset.batch_size", cfg.dataset.batch_size, 0, strict=True, whole=True)
    return loop


def build_trainer(cfg: DictConfig, run_dir: Path, info: DistInfo) -> Trainer:
    """A segmentation run: the method, its data, optimiser, schedule, logger and mIoU evaluation."""
    loop = training_settings(cfg)
    method = build_method(cfg).to(info.device)  # before the optimiser, which picks its kernel by device
    source, target = build_train_sets(cfg)
    step = build_train_step(cfg, method, info)
    evaluation = build_segmentation_eval(cfg, info, "val")
    return Trainer(
        loop,
        step,
        batches=build_batches(cfg, source, target, info),
        evaluate=evaluation,
        dist_info=info,
        run_dir=run_dir,
        logger=build_logger(cfg, run_dir, info, "train", step.optimizer),
        resolved_config=OmegaConf.to_container(cfg, resolve=True),
    )


# ---- looking at alignments (refign.align) ------------------------------------------------------------------
def build_aligner(cfg: DictConfig) -> torch.nn.Module:
    """The configured matcher in eval mode: a trained one (``alignment.checkpoint``; the synthetic
    benchmark's default is the shipped CPU-scale matcher) or the ground truth (``alignment=oracle``)."""
    if not needs_gt_flow(cfg) and not cfg.alignment.get("checkpoint"):
        raise ConfigError(
            "refign.align needs a trained matcher: set alignment.checkpoint=<file> (the released "
            "uawarpc_megadepth.ckpt with alignment=uawarpc, or one from python -m refign.align_train)"
        )
    return instantiate(cfg.alignment).eval()


def build_pair_sets(cfg: DictConfig, split: str) -> dict[str, Dataset]:
    """The sets of ``dataset.<split>`` loading target and reference, and on the synthetic benchmark's
    target domain the ground-truth flow too."""
    sets = {}
    for name, spec in (cfg.dataset.get(split) or {}).items():
        keys = ["image", "image_ref"]
        if issubclass(get_class(spec._target_), SyntheticDataset) and spec.get("domain") == "target":
            keys += ["flow", "flow_valid"]
        sets[name] = instantiate(spec, load_keys=keys)
    if not sets:
        raise ConfigError(f"dataset {cfg.dataset.name!r} has no '{split}' sets to take pairs from")
    return sets


# ---- matcher training (refign.align_train) ---------------------------------------------------------------
def stage_cfg(cfg: DictConfig) -> DictConfig:
    """The settings of the selected matcher training stage (``stage=N`` → ``stages.stageN``)."""
    key = cfg.stage_key
    if key not in cfg.stages:
        raise ValueError(f"stage={cfg.stage!r}: no '{key}' in stages (have {list(cfg.stages)})")
    return cfg.stages[key]


def build_matcher(cfg: DictConfig) -> AlignmentNetwork:
    """The matcher of ``cfg.alignment``; for ``mode=eval`` without ``alignment.checkpoint``, the data's
    shipped weights (``data.shipped_checkpoint``)."""
    if cfg.mode == "eval" and not cfg.alignment.checkpoint:
        shipped = cfg.dataset.get("shipped_checkpoint")
        if not shipped:
            raise ValueError(
                f"mode=eval needs alignment.checkpoint=<file> (dataset {cfg.dataset.name!r} ships none)"
            )
        log.info("mode=eval without alignment.checkpoint: evaluating the shipped matcher %s", shipped)
        with open_dict(cfg):
            cfg.alignment.checkpoint = shipped
    return instantiate(cfg.alignment)


def build_matcher_eval(cfg: DictConfig, info: DistInfo):
    """PCK evaluation of the matcher on ``dataset.eval`` (with the zero-flow baseline on the synthetic data)."""
    data = cfg.dataset
    return matcher_eval(instantiate(data.eval), data.name, info.device, data.name == "synthetic")


def build_matcher_trainer(
    cfg: DictConfig, network: AlignmentNetwork, run_dir: Path, info: DistInfo
) -> Trainer:
    """Warp-consistency training of ``network`` for the selected stage, on the engine."""
    loop = training_settings(cfg)
    stage = stage_cfg(cfg)
    pairs = WarpConsistencyPairs(
        instantiate(cfg.dataset.train),
        WarpConfig(**OmegaConf.to_container(stage.warps)),
        swap_p=cfg.swap_p,
        crop_size=cfg.dataset.crop_size,
        min_valid_fraction=cfg.min_valid_fraction,
    )
    method = MatcherTraining(network, stage.visibility_mask, cfg.loss_weighting).to(info.device)
    step = build_train_step(cfg, method, info)

    def batches(start: int) -> Iterator[dict]:
        return step_loader(pairs, cfg.dataset.batch_size, info, cfg.seed, start, cfg.trainer.num_workers)

    return Trainer(
        loop,
        step,
        batches=batches,
        evaluate=build_matcher_eval(cfg, info),
        dist_info=info,
        run_dir=run_dir,
        logger=build_logger(cfg, run_dir, info, "align_train", step.optimizer),
        resolved_config=OmegaConf.to_container(cfg, resolve=True),
        # the matcher's own state dict under the official top-level names, as before the engine ran it:
        # ``alignment.checkpoint=<this file>`` and ``read_state_dict`` read it directly
        checkpoint_extras=lambda: {"state_dict": network.state_dict(), "stage": cfg.stage},
    )
