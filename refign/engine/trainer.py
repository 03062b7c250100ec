"""The method-agnostic training loop: devices, DDP, AMP, optimiser and schedule, checkpoints, evaluation, logs.

It knows three things about the method (an ``nn.Module``: ``refign.uda.base.UDAMethod``, or the matcher's
``MatcherTraining``): ``method(batch, step, backward)`` hands each loss to ``backward(name, loss)`` as soon
as it is computed, which back-propagates it at once (``refign.engine.backward``: one pass's activations
alive at a time, as in the official steps), and returns a dict of detached scalars and panels that is
logged; ``method.loss_names`` declares those losses in order; ``method.inference_model()`` is the network
that is evaluated and stored apart in checkpoints. Evaluation is a callable handed in by the caller (mIoU
for segmentation, PCK for the matcher), so the engine knows neither tasks nor class counts; both trainings
(``refign.train``, ``refign.align_train``) run here. See docs/architecture.md#engine.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from refign.engine import checkpoint, preemption, resume
from refign.engine.backward import LossBackward, MethodStep
from refign.engine.checkpoint_store import CheckpointStore
from refign.engine.dist import DistInfo, all_gather_object, all_reduce_sum
from refign.engine.loggers import MetricLogger
from refign.engine.window import MetricWindow
from refign.errors import check_number
from refign.progress import progress_bar

log = logging.getLogger(__name__)
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# the paper scale's default (conf/scale/paper.yaml): 16-bit mixed precision as the official runs, resolved here
AUTO16 = "auto16"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto16`` → ``bf16`` on a CUDA device that supports it, ``fp16`` (with the GradScaler) on one that
    does not, ``32`` on the CPU: a CPU's bfloat16 autocast is slower than fp32 on most CPUs and changes the
    numbers, so CPU runs (dry runs, tests) stay in fp32 unless ``bf16`` is asked for by name. Any other
    value is returned as it is."""
    if precision != AUTO16:
        return precision
    if device.type != "cuda":
        return "32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


# (model, autocast) -> (results, written to eval_<step>.json and returned by fit; scalars for the logger)
Evaluation = Callable[[nn.Module, Callable], tuple[dict, dict[str, float]]]


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss or gradient: the run stops. Its last good checkpoint is
    kept as it was; the diverged state goes to a file of its own (``CheckpointStore.save_diverged``)."""


@dataclass
class TrainerConfig:
    """The ``trainer`` node (conf/trainer/) of both trainings. ``device``, ``deterministic``,
    ``eval_batch_size`` and ``num_workers`` are read by the entry points and the loaders, the rest by the loop."""

    max_steps: int
    precision: str = "32"
    grad_clip: float | None = None
    log_every: int = 10
    image_every: int = 0
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    max_nonfinite_steps: int = 5
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False
    device: str = "auto"
    deterministic: bool = False
    eval_batch_size: int = 1
    num_workers: int = 0
    stop_signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1", "SIGUSR2")
    requeue: bool = True

    def __post_init__(self) -> None:
        """Refuse a bad number before anything is built: ``max_steps=-5`` would otherwise "train" no step and
        write a checkpoint. Cadences may be 0 (never)."""
        for key, minimum, strict in (
            ("max_steps", 0, True),
            ("max_nonfinite_steps", 0, True),
            ("eval_batch_size", 0, True),
            ("log_every", 0, False),
            ("image_every", 0, False),
            ("eval_every", 0, False),
            ("checkpoint_every", 0, False),
            ("num_workers", 0, False),
        ):
            check_number(f"trainer.{key}", getattr(self, key), minimum, strict, whole=True)
        if self.grad_clip is not None:
            check_number("trainer.grad_clip", self.grad_clip, 0, False)


def on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device``; one already there is returned as it is (``Module.to`` would swap every
    parameter of a model built of fake tensors, as ``refign.estimate`` builds it, and fails)."""
    tensors = [*module.parameters(), *module.buffers()]
    if all(t.device == device or (device.index is None and t.device.type == device.type) for t in tensors):
        return module
    return module.to(device)


class Trainer:
    """Runs ``cfg.max_steps`` optimiser steps of ``method`` on batches from ``batches(start_step)``.

    Args:
        cfg: loop settings (steps, precision, cadences, DDP options).
        method: the method (owns its networks and losses), following the contract above.
        optimizer, scheduler: built over the method's trainable parameters.
        batches: ``start_step -> iterator`` of the method's batches (tensors are moved to the device here).
        evaluate: run every ``eval_every`` steps and at the end; None = no evaluation.
        dist_info: rank, world size and device of this process.
        run_dir: where checkpoints, ``metrics.jsonl`` and ``eval_*.json`` go.
        logger: scalar and image sink.
        resolved_config: stored in every checkpoint.
        checkpoint_extras: entries added to every checkpoint (e.g. the matcher's bare state dict).
    """

    # makes each step's ``backward`` for the method; a subclass of LossBackward counts what the backwards do
    # (``refign.estimate``) or sums the losses as before (the tests)
    loss_backward: Callable[..., LossBackward] = LossBackward

    def __init__(
        self,
        cfg: TrainerConfig,
        method: nn.Module,
        *,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        batches: Callable[[int], Iterator[dict]],
        evaluate: Evaluation | None,
        dist_info: DistInfo,
        run_dir: Path,
        logger: MetricLogger,
        resolved_config: dict | None = None,
        checkpoint_extras: Callable[[], dict] | None = None,
    ) -> None:
        if cfg.precision not in (*PRECISIONS, AUTO16):
            raise ValueError(
                f"trainer.precision must be one of {[*PRECISIONS, AUTO16]}, got {cfg.precision!r}"
            )
        self.precision = resolve_precision(cfg.precision, dist_info.device)
        if self.precision != cfg.precision:
            log.info("trainer.precision=%s on %s: %s", cfg.precision, dist_info.device, self.precision)
        self.cfg, self.dist = cfg, dist_info
        self.method = on_device(method, dist_info.device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.batches, self.evaluate = batches, evaluate
        self.run_dir, self.logger = Path(run_dir), logger
        self.resolved_config = resolved_config
        self.checkpoint_extras = checkpoint_extras
        self.step = 0
        # the step of the newest checkpoint this process wrote (no double save at the end)
        self.saved_step = -1
        self.store = CheckpointStore(self.run_dir / "checkpoints", keep_last=cfg.keep_checkpoints)
        dtype = PRECISIONS[self.precision]
        self.autocast = (
            (lambda: torch.autocast(dist_info.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        )
        self.scaler = torch.amp.GradScaler(dist_info.device.type, enabled=self.precision == "fp16")
        # what a step changes besides the optimiser's parameters, restored where a step is skipped
        self.step_state = method.step_state() if hasattr(method, "step_state") else list(method.buffers())
        self.model = self._wrap(method)

    def _wrap(self, method: nn.Module) -> nn.Module:
        if not self.dist.distributed:
            return MethodStep(method)
        if self.cfg.sync_batchnorm:
            if self.dist.device.type == "cuda":
                method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
            else:
                log.warning("trainer.sync_batchnorm ignored: SyncBatchNorm needs CUDA")
        ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        return DistributedDataParallel(
            MethodStep(method), device_ids=ids, find_unused_parameters=self.cfg.find_unused_parameters
        )

    # ---- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit. A collective (every rank calls it): each
        rank draws its own random numbers (augmentation, ClassMix, dropout), so all ranks' generator states
        are kept, in rank order."""
        return {
            **checkpoint.method_entries(self.method),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "rng": all_gather_object(checkpoint.rng_state()),
            "config": self.resolved_config,
            "logger": self.logger.state_dict(),
            **(self.checkpoint_extras() if self.checkpoint_extras else {}),
        }

    def load_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        checkpoint.restore_method(self.method, state, source)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
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

    def restore(self, state: dict, source: Path) -> None:
        """Continue from a loaded checkpoint (``refign.engine.resume.plan`` finds and loads it)."""
        self.load_state_dict(state, str(source))
        self.saved_step = self.step
        log.info("resumed from %s at step %d", source, self.step)

    def close(self) -> None:
        """Release what outlives the loop (the logger's files and wandb run); called whether ``fit`` ended or
        failed."""
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
        tensors = [
            t for t in self.method.state_dict().values() if torch.is_tensor(t) and t.is_floating_point()
        ]
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
    def train_step(self, batch: dict) -> tuple[dict[str, torch.Tensor | float], torch.Tensor, dict]:
        """One optimiser step; returns the logged scalars (device tensors, not read here), a device flag that
        is 1 where the step was skipped for a non-finite loss or gradient, and the ``img/*`` panels.

        Nothing here waits for the device (no ``.item()``, ``float()`` of a tensor or branch on a tensor's
        value): the host queues the next step while this one runs. The scalars are read every ``log_every``
        steps (``_log_window``).
        """
        before = [t.clone() for t in self.step_state]
        backward = self.loss_backward(
            self.method.loss_names, type(self.method).__name__, self.scaler, self.dist.device.type
        )
        with self.autocast():
            out, last = self.model(batch, self.step, backward)  # every loss but the last back-propagated
        # After DDP's forward: the backward that all-reduces. Every rank back-propagates (DDP expects it); the
        # step is skipped if any rank saw a non-finite value.
        backward.backward_last(last)
        loss = sum(backward.losses.values())  # detached; NaN/inf where any loss was
        skipped = all_reduce_sum(self._non_finite(loss)).clamp(max=1).reshape(())
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.cfg.grad_clip)
        self._optimizer_step(skipped)
        self._roll_back(before, skipped)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        logged = {
            k: v.detach() if torch.is_tensor(v) else v
            for k, v in out.items()
            if isinstance(v, float) or (torch.is_tensor(v) and v.numel() == 1)
        }
        logged |= {f"loss_{name}": value for name, value in backward.losses.items()}
        logged["loss"] = loss
        images = {k: v for k, v in out.items() if k.startswith("img/")}
        return logged, skipped, images

    def _non_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """1 on the device where the loss or (without the fp16 scaler) a gradient is NaN/inf.

        A finite loss can still give non-finite gradients (an overflow in backward); the check is the one the
        GradScaler makes, with a scale of 1. Under fp16 the scaler checks the gradients itself, and its
        overflows are routine (it backs off its scale), so only the loss counts towards the guard there."""
        flag = (~torch.isfinite(loss.detach())).float().reshape(1)
        if self.scaler.is_enabled():
            return flag
        by_kind: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for p in self.method.parameters():
            if p.grad is not None:
                by_kind.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
        one = torch.ones(1, device=self.dist.device)
        for grads in by_kind.values():  # leaves the gradients as they are (× 1); sets flag where non-finite
            torch._amp_foreach_non_finite_check_and_unscale_(grads, flag, one)
        return flag

    def _roll_back(self, before: list[torch.Tensor], skipped: torch.Tensor) -> None:
        """Undo, where the step was skipped, what its forward pass changed outside the optimiser: BatchNorm
        statistics and the EMA teacher (``step_state``). On the device, without reading the flag."""
        keep_old = skipped.bool()
        for now, old in zip(self.step_state, before, strict=True):
            now.copy_(torch.where(keep_old, old, now))

    def _optimizer_step(self, skipped: torch.Tensor) -> None:
        """The update, left out on the device where ``skipped`` is 1.

        A fused optimiser (``optim.fused=true``, the default) takes the flag as its ``found_inf`` input and
        leaves parameters, moments and step count untouched, without the host reading the flag. Under fp16 the
        GradScaler does the same from the gradients, which a non-finite loss makes non-finite (and it backs
        off its scale). A non-fused optimiser cannot skip on the device: there the host reads the flag, one
        synchronisation per step.
        """
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif all(group.get("fused") for group in self.optimizer.param_groups):
            self.optimizer.found_inf = skipped
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        elif not skipped.item():
            self.optimizer.step()

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
        means = summary.means | {"lr": self.optimizer.param_groups[0]["lr"]}
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
        self.method.train()
        if self.dist.is_main and self.resolved_config is not None:
            resume.write_config_record(self.run_dir, self.resolved_config)
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
                bar.close()
                self._preempt(stop.received or "a stop signal on another rank")
            batch = {k: v.to(self.dist.device, non_blocking=True) for k, v in next(batches).items()}
            self.method.wants_images = self.dist.is_main and self._due(self.cfg.image_every, self.step + 1)
            logged, skipped, images = self.train_step(batch)
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
        results, flat = self.evaluate(self.method.inference_model(), self.autocast)
        self.logger.log_eval(results, flat, self.step)
        if self.dist.is_main:
            (self.run_dir / f"eval_{self.step:07d}.json").write_text(json.dumps(results, indent=1))
            log.info("step %d: %s", self.step, ", ".join(f"{k} {v:.2f}" for k, v in flat.items()))
            score = results.get("target", {}).get("mIoU")  # the adapted domain's mIoU ranks checkpoints
            if score is not None and self.saved_step == self.step:
                self.store.mark_best(self.step, score)
        return results
