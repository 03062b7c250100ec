"""python -m refign.align_train stage=1|2 [mode=eval] — trains or evaluates the UAWarpC matcher
(docs/uawarpc.md#training).

Training runs on the engine that trains the segmentation methods (``refign.engine.trainer``), so it resumes
bit for bit (``resume=auto`` or a checkpoint path), uses mixed precision when asked (``trainer.precision``), skips non-finite
steps and writes ``metrics.jsonl`` / ``eval_<step>.json``; it also runs under torchrun.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from refign import build
from refign.cli import entry_point
from refign.engine import checkpoint, dist, resume
from refign.engine.preemption import StopSignals
from refign.engine.reproducibility import seed_everything, task_session

log = logging.getLogger("refign.align_train")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Build the matcher → train it (``mode=train``) or evaluate it (``mode=eval``) → print the table.

    Returns the metrics and, after training, ``checkpoint``: the run's ``last.pt``.
    """
    if cfg.mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {cfg.mode!r}")
    with task_session(cfg) as info:  # trainer.deterministic holds for the matcher too
        result = train(cfg, run_dir, info) if cfg.mode == "train" else evaluate(cfg, info)
        if info.is_main:
            print(format_metrics(result["metrics"], cfg.dataset.name))
        return {k: v for k, v in result.items() if k != "metrics"} | result["metrics"]


def train(cfg: DictConfig, run_dir: Path, info: dist.DistInfo) -> dict:
    """Resolve resume → seed → build → restore → fit → close, as ``refign.train`` does."""
    task_root = Path(cfg.paths.output_dir) / cfg.task_name
    start = resume.plan(cfg, task_root, run_dir)
    run_dir = start.run_dir
    seed_everything(cfg.seed + info.rank)
    trainer = build.build_matcher_trainer(cfg, build.build_matcher(cfg), run_dir, info)
    try:
        if start.state is not None:
            trainer.restore(start.state, start.source)
        with StopSignals(cfg.trainer.stop_signals) as stop:
            metrics = trainer.fit(stop)
    finally:
        trainer.close()
    return {"metrics": metrics, "checkpoint": str(run_dir / "checkpoints" / checkpoint.LAST)}


def evaluate(cfg: DictConfig, info: dist.DistInfo) -> dict:
    """Seed → build the matcher (``alignment.checkpoint`` or the data's shipped one) → PCK on ``dataset.eval``."""
    seed_everything(cfg.seed + info.rank)
    network = build.build_matcher(cfg).to(info.device)
    metrics, _ = build.build_matcher_eval(cfg, info)(network)
    return {"metrics": metrics}


def format_metrics(metrics: dict[str, float], data_name: str) -> str:
    """PCK / AEPE overall and per condition as a table, then the certainty and speed figures."""
    groups = [""] + sorted({k.split("/")[0] for k in metrics if "/" in k})
    cols = ("pck1", "pck3", "pck5", "pck10", "aepe")
    lines = [f"matcher on {data_name}: " + " | ".join(["split".ljust(8), *(c.upper() for c in cols)])]
    for g in groups:
        prefix = f"{g}/" if g else ""
        if f"{prefix}pck5" in metrics:
            cells = [f"{metrics[prefix + c]:6.2f}" for c in cols]
            lines.append(" " * (len(data_name) + 13) + " | ".join([(g or "all").ljust(8), *cells]))
    if "identity_pck5" in metrics:
        lines.append(
            f"identity (zero flow): PCK-5 {metrics['identity_pck5']:.2f}, AEPE {metrics['identity_aepe']:.2f}"
        )
    if "certain50_epe_ratio" in metrics:
        lines.append(
            f"certainty: EPE of the 50 % most certain pixels / EPE of all = {metrics['certain50_epe_ratio']:.3f} "
            f"(Spearman certainty–EPE {metrics['spearman_cert_epe']:+.3f})"
        )
    lines.append(f"throughput: {metrics['pairs_per_s']:.1f} pairs/s")
    return "\n".join(lines)


@entry_point("align_train")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
