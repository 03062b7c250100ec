"""The method-agnostic training loop: data, cadences, logs, checkpoints, evaluation, stop signals around the
step (``refign.engine.step.TrainStep``). The method contract (``method(batch, step, backward)``,
``loss_names``, ``inference_model()``) and why evaluation is handed in: docs/architecture.md#engine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from refign.engine import checkpoint, preemption
from refign.engine.checkpoint_store import CheckpointStore
from refign.engine.dist import DistInfo, all_gather_object
from refign.engine.loggers import MetricLogger
from refign.engine.step import TrainStep
from refign.engine.window import MetricWindow
from refign.utils.errors import check_number
from refign.utils.progress import progress_bar

log = logging.getLogger(__name__)
# (model, autocast) -> (results, written to eval_<step>.json and returned by fit; scalars for the logger)
Evaluation = Callable[[nn.Module, Callable], tuple[dict, dict[str, float]]]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss or gradient: the run stops. Its last good checkpoint is
    kept as it was; the diverged state goes to a file of its own (``CheckpointStore.save_diverged``)."""


@dataclass
class TrainerConfig:
    """The ``trainer`` node (conf/trainer/, where its defaults are) of both trainings. ``device``,
    ``deterministic``, ``eval_batch_size`` and ``num_workers`` are read by the entry points and the loaders,
    the step options by ``TrainStep``, the rest by the loop."""

    max_steps: int
    precision: str
    grad_clip: float | None
    log_every: int
    image_every: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    max_nonfinite_steps: int
    sync_batchnorm: bool
    find_unused_parameters: bool
    device: str
    deterministic: bool
    eval_batch_size: int
    num_workers: int
    stop_signals: tuple[str, ...]
    requeue: bool

    def __post_init__(self) -> None:
        """Refuse a bad number before anything is built: ``max_steps=-5`` would otherwise "train" no step and
        write a checkpoint. Cadences may be 0 (never)."""
        for key in ("max_steps", "max_nonfinite_steps", "eval_batch_size"):
            check_number(f"trainer.{key}", getattr(self, key), 0, strict=True, whole=True)
        for key in ("log_every", "image_every", "eval_every", "checkpoint_every", "num_workers"):
            check_number(f"trainer.{key}", getattr(self, key), 0, strict=False, whole=True)
        if self.grad_clip is not None:
            check_number("trainer.grad_clip", self.grad_clip, 0, False)


class Trainer:
    """Runs ``cfg.max_steps`` calls of ``train_step`` on batches from ``batches(start_step)``, with the
    cadences around them: logs, panels, checkpoints, evaluation, stop signals.

    Args:
        train_step: the method, its optimiser, schedule, loss scaler and autocast (the checkpoints hold them).
        batches: ``start_step -> iterator`` of the method's batches (tensors are moved to the device here).
        evaluate: run every ``eval_every`` steps and at the end; None = no evaluation.
        run_dir: where checkpoints, ``metrics.jsonl`` and ``eval_*.json`` go.
        resolved_config: stored in every checkpoint.
        checkpoint_extras: entries added to every checkpoint (e.g. the matcher's bare state dict).
    """

    def __init__(
        self,
        cfg: TrainerConfig,
        train_step: TrainStep,
        *,
        batches: Callable[[int], Iterator[dict]],
        evaluate: Evaluation | None,
        dist_info: DistInfo,
        run_dir: Path,
        logger: MetricLogger,
        resolved_config: dict | None = None,
        checkpoint_extras: Callable[[], dict] | None = None,
    ) -> None:
        self.cfg, self.dist, self.train_step = cfg, dist_info, train_step
        self.batches, self.evaluate = batches, evaluate
        self.run_dir, self.logger = Path(run_dir), logger
        self.resolved_config, self.checkpoint_extras = resolved_config, checkpoint_extras
        self.step = 0
        # the step of the newest checkpoint this process wrote (no double save at the end)
        self.saved_step = -1
        self.store = CheckpointStore(self.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints)

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit. A collective (every rank calls it): each
        rank draws its own random numbers (augmentation, ClassMix, dropout), so all ranks' generator states
        are kept, in rank order."""
        step = self.train_step
        return {
            **checkpoint.method_entries(step.method),
            "optimizer": step.optimizer.state_dict(),
            "scheduler": step.scheduler.state_dict(),
            "scaler": step.scaler.state_dict(),
            "step": self.step,
            "rng": all_gather_object(checkpoint.rng_state()),
            "config": self.resolved_config,
            "logger": self.logger.state_dict(),
            **(self.checkpoint_extras() if self.checkpoint_extras else {}),
        }

    def restore(self, state: dict, source: Path) -> None:
        """Continue from a loaded checkpoint (``refign.engine.resume.plan`` finds and loads it)."""
        step = self.train_step
        checkpoint.restore_method(step.method, state, str(source))
        step.optimizer.load_state_dict(state["optimizer"])
        step.scheduler.load_state_dict(state["scheduler"])
        step.scaler.load_state_dict(state["scaler"])
        self.step = self.saved_step = state["step"]
        self.logger.resume(self.step, state.get("logger"))
        rng = state["rng"]
        if isinstance(rng, dict):  # a checkpoint from before per-rank states: the saving rank's only
            rng = [rng]
        if len(rng) != self.dist.world_size:
            log.warning(
                "the checkpoint holds the random state of %d rank(s), this run has %d: ranks without one "
                "keep their own seed, and the run is not bit-identical to an uninterrupted one",
                len(rng),
                self.dist.world_size,
            )
        if self.dist.rank < len(rng):
            checkpoint.set_rng_state(rng[self.dist.rank])
        log.info("resumed from %s at step %d", source, self.step)

    def close(self) -> None:
        """Release what outlives the loop (the wandb run), whether ``fit`` ended or failed."""
        self.logger.close()

    def save(self) -> None:
        """Write the current state as the run's newest checkpoint (rank 0; a collective). A state that is not
        known good is not written over the last good one: see ``_not_good``."""
        reason = self._not_good()
        if reason:
            log.warning("step %d: not checkpointed, %s; the last good checkpoint stays", self.step, reason)
            return
        state = self.state_dict()  # on every rank: it gathers their random states
        if self.dist.is_main:
            self.store.save(state, self.step)
        self.saved_step = self.step

    def _not_good(self) -> str | None:
        """Why the current state must not become the newest checkpoint: the latest steps were skipped for
        non-finite values (the update before them may have blown the weights up with a finite loss), or a
        weight or buffer is not finite. Reads the device (once per checkpoint); the same on every rank."""
        streak = int(self.window.streak.item()) if hasattr(self, "window") else 0
        if streak:
            return f"the last {streak} step(s) were skipped for non-finite values"
        state = self.train_step.method.state_dict()
        tensors = [t for t in state.values() if torch.is_tensor(t) and t.is_floating_point()]
        if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
            return "a weight or buffer is NaN/inf"
        return None

    def _stop_diverged(self, worst_streak: int) -> None:
        """Stop a run whose steps keep being skipped: the diverged state goes to a file of its own, the
        checkpoints written since the last step with a finite loss are set aside (that step's update may be
        the one that blew up), and the newest good checkpoint stays ``last.pt``."""
        streak = int(self.window.streak.item())
        state = self.state_dict()
        where = "no checkpoint was kept"
        if self.dist.is_main:
            diverged = self.store.save_diverged(state, self.step)
            self.store.discard_from(self.step - streak)
            good = self.store.latest_intact()
            kept = f"last good checkpoint: {good}" if good else "no good checkpoint to keep"
            where = f"{kept}; the diverged state is in {diverged}"
        raise NonFiniteLossError(
            f"{worst_streak} consecutive non-finite losses or gradients by step {self.step}; {where}"
        )

    def _preempt(self, signal_name: str) -> None:
        """Checkpoint the current step, requeue the Slurm job where configured, and stop the run."""
        log.warning("%s received: stopping at step %d with a checkpoint", signal_name, self.step)
        if self.saved_step != self.step:
            self.save()
        requeued = self.dist.is_main and self.cfg.requeue and preemption.requeue_slurm_job()
        raise preemption.Preempted(signal_name, self.step, requeued)

    # ---- loop --------------------------------------------------------------------------------------------
    def _log_window(self, bar: tqdm) -> None:
        """Log the window's means; warn about skipped steps; stop the run (keeping its last good state) once
        a streak of non-finite losses reached ``max_nonfinite_steps``."""
        summary = self.window.read()
        if summary.skipped:
            log.warning(
                "step %d: %d of the last %d steps had a non-finite loss or gradient and were skipped",
                self.step,
                summary.skipped,
                summary.steps,
            )
        if summary.worst_streak >= self.cfg.max_nonfinite_steps:
            self._stop_diverged(summary.worst_streak)
        means = summary.means | {"lr": self.train_step.optimizer.param_groups[0]["lr"]}
        if self.dist.device.type == "cuda":  # the GPU memory the run needs, as mmcv's logger reports it
            means["cuda_peak_gib"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**30
        bar.set_postfix({k: f"{v:.3g}" for k, v in means.items() if k.startswith("loss")})
        self.logger.log({f"train/{k}": v for k, v in means.items()}, self.step, skipped=summary.skipped)

    @staticmethod
    def _due(every: int, step: int) -> bool:
        """Whether a cadence of ``every`` steps (0: never) falls on ``step``."""
        return bool(every) and step % every == 0

    def fit(self, stop: preemption.StopSignals | None = None) -> dict:
        """Train to ``max_steps``, then save and evaluate; returns the final evaluation. ``stop``: the signals
        that end the run at a step boundary with a checkpoint (``refign.engine.preemption``)."""
        method = self.train_step.method
        method.train()
        if self.dist.is_main and self.resolved_config is not None:
            self.store.write_config(self.resolved_config)
        batches = self.batches(self.step)
        bar = progress_bar(
            total=self.cfg.max_steps,
            initial=self.step,
            desc="train",
            disable=not self.dist.is_main,
            dynamic_ncols=True,
        )
        self.window = MetricWindow(self.dist.device)
        while self.step < self.cfg.max_steps:
            if stop is not None and self._stop_check_due() and stop.agreed(self.dist):
                if self.window.counts:  # the steps since the last log line: logged, not lost with the process
                    self._log_window(bar)
                bar.close()
                self._preempt(stop.received or "a stop signal on another rank")
            batch = {k: v.to(self.dist.device, non_blocking=True) for k, v in next(batches).items()}
            method.wants_images = self.dist.is_main and self._due(self.cfg.image_every, self.step + 1)
            logged, skipped, images = self.train_step(batch, self.step)
            self.step += 1
            self.window.add(logged, skipped)
            bar.update(1)
            if self._due(self.cfg.log_every, self.step) or self.step == self.cfg.max_steps:
                self._log_window(bar)
            for key, image in images.items():
                self.logger.log_image(key, image, self.step)
            if self._due(self.cfg.checkpoint_every, self.step):
                self.save()
            if self._due(self.cfg.eval_every, self.step) and self.step < self.cfg.max_steps:
                self.run_eval()
        bar.close()
        if self.saved_step != self.step:
            self.save()
        return self.run_eval()

    def _stop_check_due(self) -> bool:
        """Whether to look for a stop signal before this step: every step in one process (a host flag, no
        device read); under DDP at logging steps, where the ranks agree on it with one collective."""
        return not self.dist.distributed or self._due(self.cfg.log_every, self.step)

    def run_eval(self) -> dict:
        """Evaluate the method's inference network; log the scalars and write ``eval_<step>.json``."""
        if self.evaluate is None:
            return {}
        results, flat = self.evaluate(self.train_step.method.inference_model(), self.train_step.autocast)
        self.logger.log_eval(results, flat, self.step)
        if self.dist.is_main:
            (self.run_dir / f"eval_{self.step:07d}.json").write_text(json.dumps(results, indent=1))
            log.info("step %d: %s", self.step, ", ".join(f"{k} {v:.2f}" for k, v in flat.items()))
            score = results.get("target", {}).get("mIoU")  # the adapted domain's mIoU ranks checkpoints
            if score is not None and self.saved_step == self.step:
                self.store.mark_best(self.step, score)
        return results
