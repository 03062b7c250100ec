"""python -m refign.train [dataset=… uda=… refign=on|off …] — one training run (or a sweep with -m)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from refign import build
from refign.engine.reproducibility import task_session
from refign.task import entry_point, fit, output_dir

log = logging.getLogger("refign.train")


@entry_point("train")
def main(cfg: DictConfig) -> float:
    results = run(cfg, output_dir(cfg))
    return results.get("target", next(iter(results.values())))["mIoU"] if results else float("nan")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """One training run. Its random state is a function of ``cfg.seed`` and the rank alone, whether it is the
    first run of its process or a later one (a sweep point), and nothing of it outlives the run."""
    with task_session(cfg) as info:
        results, _ = fit(cfg, run_dir, info, build.build_trainer)
        if info.is_main:
            for name, r in results.items():
                log.info("%s-val mIoU: %.2f", name, r["mIoU"])
        return results


if __name__ == "__main__":
    main()
