"""python -m refign.train [dataset=… uda=… refign=on|off …] — one training run (or a sweep with -m)."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from refign import build
from refign.data.loader import step_loader
from refign.engine import checkpoint, dist
from refign.engine.loggers import MetricLogger
from refign.engine.optim import build_optimizer, build_scheduler
from refign.engine.reproducibility import deterministic_algorithms, import_targets, seed_everything
from refign.engine.trainer import Trainer, TrainerConfig

log = logging.getLogger("refign.train")


def resolve_resume(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, Path]:
    """Checkpoint to resume from and the run directory to keep writing to."""
    if cfg.resume in (None, "", False):
        return None, run_dir
    if cfg.resume == "auto":
        latest = checkpoint.find_latest(Path(cfg.paths.output_dir) / cfg.task_name / "runs")
        if latest is None:
            log.info("resume=auto: no previous run of task %r, starting fresh", cfg.task_name)
            return None, run_dir
        return latest, latest.parent.parent
    path = Path(cfg.resume)
    return path, path.parent.parent if path.parent.name == "checkpoints" else run_dir


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One training run. Its random state is a function of ``cfg.seed`` and the rank alone, whether it is the
    first run of its process or a later one (a sweep point), and nothing of it outlives the run."""
    import_targets(cfg)  # before the seed: imports may draw from the global random streams
    info = dist.setup(cfg.trainer.device)
    try:
        with deterministic_algorithms(cfg.trainer.deterministic):
            return train(cfg, run_dir, info)
    except BaseException as err:
        # A failed run's traceback holds the trainer and its DDP wrapper: free them before the teardown
        # (see below), keeping the line numbers for the report.
        traceback.clear_frames(err.__traceback__)
        raise
    finally:
        # Only now, with the run's objects gone: a gloo process group whose last owner is DDP's reducer is
        # destroyed with the GIL held and deadlocks against its own worker threads (the end of a CPU DDP run
        # hung about every second time).
        dist.teardown()


def train(cfg: DictConfig, run_dir: Path, info: dist.DistInfo) -> dict:
    """Seed; build the method, data, optimiser and trainer; resume if asked; train and evaluate."""
    ckpt_path, run_dir = resolve_resume(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed + info.rank)
    method = build.build_method(cfg)
    source, target = build.build_train_sets(cfg)
    optimizer = build_optimizer(method, **cfg.optim)
    scheduler = build_scheduler(optimizer, max_steps=cfg.trainer.max_steps, **cfg.schedule)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = MetricLogger(
        run_dir,
        info.is_main,
        OmegaConf.to_container(cfg.logger.wandb) if cfg.logger.wandb else None,
        resolved,
    )

    def batches(start: int):
        src = step_loader(source, cfg.dataset.batch_size, info, cfg.seed, start, cfg.trainer.num_workers)
        trg = (
            step_loader(target, cfg.dataset.batch_size, info, cfg.seed + 1, start, cfg.trainer.num_workers)
            if target is not None
            else None
        )
        while True:
            yield next(src), next(trg) if trg is not None else None

    tcfg = TrainerConfig(**{k: v for k, v in cfg.trainer.items() if k not in ("device", "deterministic")})
    trainer = Trainer(
        tcfg,
        method,
        optimizer,
        scheduler,
        batches,
        build.build_datasets(cfg, "val"),
        info,
        run_dir,
        logger,
        resolved,
        cfg.dataset.over_present_classes,
    )
    if ckpt_path is not None:
        trainer.load_state_dict(checkpoint.load(ckpt_path), str(ckpt_path))
        log.info("resumed from %s at step %d", ckpt_path, trainer.step)
    try:
        results = trainer.fit()
    finally:
        logger.close()
    if info.is_main:
        for name, r in results.items():
            log.info("%s-val mIoU: %.2f", name, r["mIoU"])
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    results = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    return results.get("target", next(iter(results.values())))["mIoU"] if results else float("nan")


if __name__ == "__main__":
    main()
