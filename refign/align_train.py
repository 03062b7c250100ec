"""python -m refign.align_train stage=1|2 [mode=eval] — trains or evaluates the UAWarpC matcher on the engine
that trains the segmentation methods: resume, mixed precision, the non-finite guard, the metrics files and
torchrun alike (docs/uawarpc.md#training).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from refign import build
from refign.alignment.evaluate import pck_table
from refign.engine import checkpoint
from refign.engine.reproducibility import seed_everything, task_session
from refign.task import entry_point, fit, output_dir


@entry_point("align_train")
def main(cfg: DictConfig) -> None:
    run(cfg, output_dir(cfg))


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train the matcher (``mode=train``: ``refign.task.fit``) or evaluate it (``mode=eval``: seed → build
    the configured matcher → PCK on ``pairs.eval``), then print the table. Returns the metrics and, after
    training, ``checkpoint``: the run's ``last.pt``."""
    if cfg.mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {cfg.mode!r}")
    if cfg.stage_key not in cfg.stages:  # before anything reads the stage's values through ${stages.…}
        raise ValueError(
            f"stage={cfg.stage}: the schedule of pairs={cfg.pairs.name} has {', '.join(cfg.stages)} only "
            f"(conf/align_stages/; stage 2 is the official schedule's, align_stages@stages=official)"
        )
    with task_session(cfg) as info:  # trainer.deterministic holds for the matcher too
        if cfg.mode == "train":
            metrics, run_dir = fit(cfg, run_dir, info, build.build_matcher_trainer)
            result = {"checkpoint": str(run_dir / "checkpoints" / checkpoint.LAST)}
        else:
            seed_everything(cfg.seed + info.rank)
            network = build.build_matcher(cfg).to(info.device)
            metrics, result = build.build_matcher_eval(cfg, info)(network)[0], {}
        if info.is_main:
            print(pck_table(metrics, cfg.pairs.name))
        return result | metrics


if __name__ == "__main__":
    main()
