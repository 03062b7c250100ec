"""Metric sinks: always a local JSONL file; wandb on rank 0 when configured (offline unless told otherwise)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricLogger:
    """Appends ``{"step": …, "time": …, "cpu_time": …, **metrics}`` lines to ``metrics.jsonl`` and forwards them to wandb.

    Args:
        run_dir: folder of the run (the JSONL file lives here).
        enabled: False on ranks other than 0.
        wandb_cfg: None, or keyword arguments for ``wandb.init`` (``mode``, ``project``, ``name`` …).
        config: the resolved run configuration, stored with the wandb run.
    """

    def __init__(
        self, run_dir: Path, enabled: bool, wandb_cfg: dict | None = None, config: dict | None = None
    ):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb = None
        if enabled and wandb_cfg:
            import wandb  # imported lazily: only rank 0 of runs that ask for it pays for it

            self.wandb = wandb.init(dir=str(run_dir), config=config, **wandb_cfg)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        # cpu_time: this process's CPU seconds (all threads), so a CPU run's cost per step is readable on a
        # shared machine, where the wall clock also counts the other jobs
        record = {
            "step": step,
            "time": round(time.time(), 3),
            "cpu_time": round(time.process_time(), 3),
            **metrics,
        }
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def log_image(self, key: str, image, step: int) -> None:
        """An (H, W, 3) uint8 panel: saved as PNG beside the metrics and sent to wandb."""
        if not self.enabled:
            return
        from PIL import Image

        folder = self.path.parent / "images"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{key.replace('/', '_')}_{step:07d}.png")
        if self.wandb is not None:
            import wandb

            self.wandb.log({key: wandb.Image(image)}, step=step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
