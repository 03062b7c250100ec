"""Metric sinks: always a local JSONL file; wandb on rank 0 when configured (offline unless told otherwise)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from refign.engine.checkpoint_store import write_text_atomic
from refign.engine.wandb_run import WandbRun

log = logging.getLogger(__name__)


class MetricLogger:
    """Appends ``{"step": …, "time": …, "cpu_time": …, **metrics}`` lines to ``metrics.jsonl`` and forwards them to wandb.

    ``metrics.jsonl`` holds each step once, in order: a run resumed at step N (or started over at 0) first
    drops the records of later steps, which the interrupted attempt wrote and this one writes again. The
    dashboard gets more than the file (docs/configuration.md#wandb), which stays as it is without wandb.

    Args:
        enabled: False on ranks other than 0.
        wandb_cfg: None, or keyword arguments for ``wandb.init`` (``mode``, ``project``, ``name`` …).
        config: the resolved run configuration, stored with the wandb run.
        optimizer: whose parameter groups' learning rates the dashboard shows.
    """

    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        wandb_cfg: dict | None = None,
        config: dict | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb = WandbRun(run_dir, wandb_cfg, config) if enabled and wandb_cfg else None
        self.optimizer = optimizer
        self.start_step = 0  # where this attempt starts (``resume``): the file's later records are stale
        self.opened = False
        self.nonfinite_steps = 0
        self.best: dict[str, list] = {}  # "val/<set>/mIoU" -> [best value, its step]

    # ---- state (kept in the trainer's checkpoints) --------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain values only (the checkpoint loads with ``weights_only=True``)."""
        return {
            "nonfinite_steps": self.nonfinite_steps,
            "best": {k: list(v) for k, v in self.best.items()},  # a copy: the checkpoint is a snapshot
            "wandb": self.wandb.state_dict() if self.wandb is not None else None,
        }

    def resume(self, step: int, state: dict | None) -> None:
        """The trainer continues at ``step`` from a checkpoint holding ``state`` (None: a checkpoint from
        before the logger kept one)."""
        state = state or {}
        self.start_step = step
        self.nonfinite_steps = state.get("nonfinite_steps", 0)
        self.best = {k: list(v) for k, v in (state.get("best") or {}).items()}
        if self.wandb is not None:
            self.wandb.resume(state.get("wandb"))

    # ---- metrics.jsonl -----------------------------------------------------------------------------------
    def _open(self) -> None:
        """Before the first record: drop the records after ``start_step`` (atomically, order kept); a line cut
        by a kill mid-write goes too."""
        self.opened = True
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if (step := _step_of(line)) is not None and step <= self.start_step]
        if len(kept) == len(lines):
            return
        write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))
        log.warning(
            "%s: the run continues at step %d; dropped %d record(s) of later steps (an interrupted "
            "attempt's, written again now)",
            self.path,
            self.start_step,
            len(lines) - len(kept),
        )

    def _write(self, metrics: dict[str, Any], step: int) -> None:
        if not self.opened:
            self._open()
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

    # ---- sinks -------------------------------------------------------------------------------------------
    def log(self, metrics: dict[str, Any], step: int, skipped: int = 0) -> None:
        """Training scalars of a logging window; ``skipped``: how many of its steps had a non-finite loss."""
        self.nonfinite_steps += skipped
        if not self.enabled:
            return
        self._write(metrics, step)
        if self.wandb is None:
            return
        extras: dict[str, float] = {"train/nonfinite_steps": self.nonfinite_steps}
        for i, group in enumerate(self.optimizer.param_groups if self.optimizer is not None else ()):
            extras[f"train/lr/{group.get('name', i)}"] = group["lr"]
        self.wandb.log({**metrics, **extras}, step)

    def log_eval(self, results: dict[str, dict], scalars: dict[str, float], step: int) -> None:
        """An evaluation: its ``scalars`` as a record; on wandb also each set's per-class IoU as one table,
        and the summary's last and best ``val/<set>/mIoU`` with their steps."""
        if not self.enabled:
            return
        self._write(scalars, step)
        for key, value in scalars.items():
            if key.endswith("/mIoU") and (key not in self.best or value > self.best[key][0]):
                self.best[key] = [value, step]
        if self.wandb is None:
            return
        self.wandb.log(scalars, step)
        # segmentation results hold a per-class table per set; the matcher's are flat PCK/EPE figures
        per_class = {
            name: r["per_class"] for name, r in results.items() if isinstance(r, dict) and "per_class" in r
        }
        rows = [[name, c, iou] for name, table in per_class.items() for c, iou in table.items()]
        if rows:
            import wandb

            self.wandb.log({"val/per_class": wandb.Table(columns=["set", "class", "IoU"], data=rows)}, step)
        summary = {}
        for key, (value, at) in self.best.items():
            if key in scalars:
                summary |= {f"last/{key}": scalars[key], f"last/{key}_step": step}
            summary |= {f"best/{key}": value, f"best/{key}_step": at}
        if summary:
            self.wandb.summarize(summary)

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

            self.wandb.log({key: wandb.Image(image)}, step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def _step_of(line: str) -> int | None:
    """The step of a ``metrics.jsonl`` line; None for a line that is not a whole record."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
