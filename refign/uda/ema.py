"""The mean teacher: an exponential moving average of the student's parameters (docs/self-training.md#ema-teacher)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd


def ema_momentum(step: int, max_momentum: float) -> float:
    """``min(1 - 1/(step+1), max_momentum)``: the teacher equals the student at step 0 and ramps up."""
    return min(1.0 - 1.0 / (step + 1), max_momentum)


def is_stochastic(module: nn.Module) -> bool:
    """Dropout of any kind or stochastic depth (mmcv/timm ``DropPath``), matched by class name."""
    return isinstance(module, _DropoutNd) or type(module).__name__ == "DropPath"


class EMATeacher(nn.Module):
    """A frozen deep copy of the student updated as θ_T ← α·θ_T + (1−α)·θ_S.

    Only parameters are averaged; buffers (BN running statistics) are the teacher's own, as in the official
    code (docs/quirks.md#q2).

    Args:
        student: the network to copy (typically a ``Segmentor``).
        momentum: the upper bound of α (0.999 in every official config).
        eval_mode: False (official, docs/quirks.md#q1): the teacher follows the method's train/eval mode, so its
            dropout and DropPath stay active while pseudo-labelling. True: dropout and DropPath are switched
            off whenever the teacher is put in train mode (the intended behaviour; BN keeps batch statistics,
            as in DAFormer/HRDA).
    """

    def __init__(self, student: nn.Module, momentum: float, eval_mode: bool = False) -> None:
        super().__init__()
        self.model = copy.deepcopy(student)
        self.model.requires_grad_(False)
        self.momentum = momentum
        self.eval_mode = eval_mode

    def train(self, mode: bool = True) -> EMATeacher:
        super().train(mode)
        if mode and self.eval_mode:
            for m in self.model.modules():
                if is_stochastic(m):
                    m.eval()
        return self

    @torch.no_grad()
    def averaged_parameters(self, student: nn.Module, step: int) -> tuple[list[torch.Tensor], float]:
        """α·θ_T + (1−α)·θ_S as new tensors (the stored ones unchanged), and the α used."""
        alpha = ema_momentum(step, self.momentum)
        teacher_params = [p.detach() for p in self.model.parameters()]
        student_params = [p.detach() for p in student.parameters()]
        if len(teacher_params) != len(student_params):
            raise RuntimeError("EMA teacher and student have different parameter lists")
        averaged = torch._foreach_mul(teacher_params, alpha)
        torch._foreach_add_(averaged, student_params, alpha=1.0 - alpha)
        return averaged, alpha

    @torch.no_grad()
    def update(self, student: nn.Module, step: int, skipped: torch.Tensor | None = None) -> float:
        """Average the student's parameters into the teacher, except where ``skipped`` (a device flag, not
        read by the host) is 1; returns the α used (for logging)."""
        averaged, alpha = self.averaged_parameters(student, step)
        for param, new in zip(self.model.parameters(), averaged, strict=True):
            param.copy_(new if skipped is None else torch.where(skipped.bool(), param, new))
        return alpha

    @contextlib.contextmanager
    def averaged(self, student: nn.Module, step: int) -> Iterator[float]:
        """The teacher of step ``step`` (``update``'s average, bit for bit) in place of the stored parameters
        while the block runs; the stored ones are restored on exit and updated by ``update`` once the step's
        fate is known. So a skipped step needs no copy of the teacher held across its peak: the average lives
        only while the teacher pseudo-labels, when no student pass is alive."""
        averaged, alpha = self.averaged_parameters(student, step)
        params = list(self.model.parameters())
        stored = [p.data for p in params]
        for param, new in zip(params, averaged, strict=True):
            param.data = new
        try:
            yield alpha
        finally:
            for param, old in zip(params, stored, strict=True):
                param.data = old

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)
