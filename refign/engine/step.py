"""One optimiser step of a method, callable on its own (as detectron2's ``SimpleTrainer.run_step``): autocast,
the loss scaler, each loss back-propagated as the method delivers it (``refign.engine.backward``), the
non-finite check and the skip it causes, gradient clipping, the optimiser and the schedule. The estimator and
the benchmarks call it directly, so they measure exactly the step that ``refign.train`` runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from refign.engine.backward import LossBackward, MethodStep
from refign.engine.dist import DistInfo, all_reduce_sum

log = logging.getLogger(__name__)
PRECISIONS = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# the paper scale's default (conf/scale/paper.yaml): 16-bit mixed precision as the official runs, resolved here
AUTO16 = "auto16"


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto16`` → ``bf16`` on a CUDA device that supports it, ``fp16`` (with the GradScaler) on one that
    does not, ``32`` on the CPU, where bfloat16 autocast is slower than fp32 on most CPUs and changes the
    numbers (``bf16`` by name still works); any other value as it is."""
    if precision != AUTO16:
        return precision
    if device.type != "cuda":
        return "32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device``; one already there is returned as it is (``Module.to`` would swap every
    parameter of a model built of fake tensors, as ``refign.estimate`` builds it, and fails)."""
    tensors = [*module.parameters(), *module.buffers()]
    if all(t.device == device or (device.index is None and t.device.type == device.type) for t in tensors):
        return module
    return module.to(device)


class TrainStep:
    """``step(batch, step_index)``: one optimiser step of ``method`` (its contract: docs/architecture.md).

    Args:
        method: the method; moved to ``dist_info.device`` unless it is there already.
        optimizer, scheduler: built over the method's trainable parameters; stepped once per call.
        dist_info: rank, world size and device; with several processes the method is wrapped in DDP.
        precision: ``32``, ``bf16``, ``fp16`` or ``auto16`` (``resolve_precision``).
        grad_clip: the gradients' total norm is clipped to it (None: not clipped).
        sync_batchnorm, find_unused_parameters: DDP options (``trainer.*``).
    """

    # a subclass of LossBackward counts what the backwards do (``refign.estimate``) or sums the losses (tests)
    loss_backward: Callable[..., LossBackward] = LossBackward

    def __init__(
        self,
        method: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        dist_info: DistInfo,
        *,
        precision: str = "32",
        grad_clip: float | None = None,
        sync_batchnorm: bool = False,
        find_unused_parameters: bool = False,
    ) -> None:
        if precision not in (*PRECISIONS, AUTO16):
            raise ValueError(f"trainer.precision must be one of {[*PRECISIONS, AUTO16]}, got {precision!r}")
        self.precision = resolve_precision(precision, dist_info.device)
        if self.precision != precision:
            log.info("trainer.precision=%s on %s: %s", precision, dist_info.device, self.precision)
        self.dist, self.grad_clip = dist_info, grad_clip
        self.method = on_device(method, dist_info.device)
        self.optimizer, self.scheduler = optimizer, scheduler
        dtype = PRECISIONS[self.precision]
        self.autocast = (
            (lambda: torch.autocast(dist_info.device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        )
        self.scaler = torch.amp.GradScaler(dist_info.device.type, enabled=self.precision == "fp16")
        # what a step changes besides the optimiser's parameters, restored where a step is skipped
        self.step_state = method.step_state() if hasattr(method, "step_state") else list(method.buffers())
        self.model = self._wrap(self.method, sync_batchnorm, find_unused_parameters)

    def _wrap(self, method: nn.Module, sync_batchnorm: bool, find_unused_parameters: bool) -> nn.Module:
        if not self.dist.distributed:
            return MethodStep(method)
        if sync_batchnorm:
            if self.dist.device.type == "cuda":
                method = nn.SyncBatchNorm.convert_sync_batchnorm(method)
            else:
                log.warning("trainer.sync_batchnorm ignored: SyncBatchNorm needs CUDA")
        ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
        return DistributedDataParallel(
            MethodStep(method), device_ids=ids, find_unused_parameters=find_unused_parameters
        )

    def __call__(self, batch: dict, step: int) -> tuple[dict[str, torch.Tensor | float], torch.Tensor, dict]:
        """One optimiser step at ``step`` (the method's schedules read it); returns the logged scalars (device
        tensors, not read), a device flag that is 1 where the step was skipped for a non-finite loss or
        gradient, and the ``img/*`` panels.
        Nothing here waits for the device (no ``.item()`` or branch on a tensor's value), so that the host
        queues the next step while this one runs."""
        before = [t.clone() for t in self.step_state]
        backward = self.loss_backward(
            self.method.loss_names, type(self.method).__name__, self.scaler, self.dist.device.type
        )
        with self.autocast():
            out, last = self.model(batch, step, backward)  # every loss but the last back-propagated
        # After DDP's forward: the backward that all-reduces. Every rank back-propagates (DDP expects it); the
        # step is skipped if any rank saw a non-finite value.
        backward.backward_last(last)
        loss = sum(backward.losses.values())  # detached; NaN/inf where any loss was
        skipped = all_reduce_sum(self._non_finite(loss)).clamp(max=1).reshape(())
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.grad_clip)
        if hasattr(self.method, "end_step"):  # before the update: an EMA teacher averages this step's student
            self.method.end_step(skipped)
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
        """1 on the device where the loss or (without the fp16 scaler) a gradient is NaN/inf: a finite loss
        can still give non-finite gradients, checked as the GradScaler checks them, with a scale of 1. Under
        fp16 the scaler's overflows are routine (it backs off its scale), so only the loss counts there."""
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
        statistics and counters (``step_state``; a method commits its EMA teacher in ``end_step`` instead, so
        that no copy of it is held across the step). On the device, without reading the flag."""
        keep_old = skipped.bool()
        for now, old in zip(self.step_state, before, strict=True):
            now.copy_(torch.where(keep_old, old, now))

    def _optimizer_step(self, skipped: torch.Tensor) -> None:
        """The update, left out where ``skipped`` is 1: on the device by a fused optimiser (the flag is its
        ``found_inf`` input) or, under fp16, by the GradScaler (a non-finite loss makes the gradients
        non-finite); a non-fused optimiser cannot skip on the device, so the host reads the flag there."""
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
