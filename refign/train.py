"""python -m refign.train [dataset=… uda=… refign=on|off …] — one training run (or a sweep with -m)."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from refign import build, resolvers
from refign.engine import dist
from refign.engine.reproducibility import deterministic_algorithms, import_targets
from refign.engine.trainer import fit_resumable

log = logging.getLogger("refign.train")
resolvers.register()  # before Hydra resolves the sweep folder names (conf/hydra/default.yaml)


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
    """Set up (run directory, seed) → build → resume if asked → train and evaluate → close."""
    runs_root = Path(cfg.paths.output_dir) / cfg.task_name / "runs"
    results, _ = fit_resumable(
        lambda folder: build.build_trainer(cfg, folder, info),
        cfg.resume,
        runs_root,
        run_dir,
        cfg.seed + info.rank,
    )
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
