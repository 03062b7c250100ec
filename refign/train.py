"""python -m refign.train [dataset=… uda=… refign=on|off …] — one training run (or a sweep with -m)."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from refign import build
from refign.cli import entry_point
from refign.engine import dist, resume
from refign.engine.preemption import StopSignals
from refign.engine.reproducibility import seed_everything, task_session

log = logging.getLogger("refign.train")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One training run. Its random state is a function of ``cfg.seed`` and the rank alone, whether it is the
    first run of its process or a later one (a sweep point), and nothing of it outlives the run."""
    with task_session(cfg) as info:
        results = train(cfg, run_dir, info)
        if info.is_main:
            for name, r in results.items():
                log.info("%s-val mIoU: %.2f", name, r["mIoU"])
        return results


def train(cfg: DictConfig, run_dir: Path, info: dist.DistInfo) -> dict:
    """Resolve resume → seed → build → restore → fit → close. The trainer lives in this frame only, so that
    ``dist.session`` can free it before the process group goes (see there)."""
    task_root = Path(cfg.paths.output_dir) / cfg.task_name
    start = resume.plan(cfg, task_root, run_dir)
    run_dir = start.run_dir
    seed_everything(cfg.seed + info.rank)
    trainer = build.build_trainer(cfg, run_dir, info)
    try:
        if start.state is not None:
            trainer.restore(start.state, start.source)
        with StopSignals(cfg.trainer.stop_signals) as stop:
            return trainer.fit(stop)
    finally:
        trainer.close()


@entry_point("train")
def main(cfg: DictConfig) -> float:
    results = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    return results.get("target", next(iter(results.values())))["mIoU"] if results else float("nan")


if __name__ == "__main__":
    main()
