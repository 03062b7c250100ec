"""What both trainings build alike: Hydra instantiation with the project's errors let through, the optimiser,
the schedule, the training step, the loop's settings and the logger."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from refign.engine.dist import DistInfo
from refign.engine.loggers import MetricLogger
from refign.engine.step import TrainStep
from refign.engine.trainer import TrainerConfig
from refign.engine.wandb_run import identity
from refign.utils.errors import check_number


def instantiate(node, *args, **kwargs):
    """``hydra.utils.instantiate`` that lets the project's own errors through unwrapped, so that the user
    reads "weight file not found: X" rather than a Hydra traceback around it."""
    try:
        return hydra_instantiate(node, *args, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError | KeyError | RuntimeError | OSError):
            raise err.__cause__ from None
        raise


def instantiate_switched(node: DictConfig, **kwargs):
    """The object of a node with an ``enabled`` switch (``mic``, ``rcs``), or None when it is off; the switch
    itself is not a constructor argument."""
    if not node.enabled:
        return None
    spec = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "enabled"}
    return instantiate(spec, **kwargs)


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
    cfg: DictConfig,
    method: torch.nn.Module,
    info: DistInfo,
    precision: str | None = None,
    settings: TrainerConfig | None = None,
) -> TrainStep:
    """One optimiser step of ``method`` with the configured optimiser, schedule and ``trainer.*`` step options
    (``precision`` overrides ``trainer.precision``; ``settings``: the trainings' ``training_settings``, else
    ``trainer`` checked here): what both trainings run, and what the estimator and the benchmarks call on
    batches they make."""
    settings = settings or TrainerConfig(**cfg.trainer)
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


def training_settings(cfg: DictConfig, data: str = "dataset") -> TrainerConfig:
    """The loop's settings (``TrainerConfig`` checks its numbers), with the learning rate, weight decay and
    batch size (``<data>.batch_size``: the segmentation ``dataset``, the matcher's ``pairs``) checked too: a
    bad value is refused, naming its key, before anything is built or written."""
    loop = TrainerConfig(**cfg.trainer)
    check_number("optim.lr", cfg.optim.lr, 0, strict=True)
    check_number("optim.weight_decay", cfg.optim.weight_decay, 0, strict=False)
    check_number(f"{data}.batch_size", cfg[data].batch_size, 0, strict=True, whole=True)
    return loop
