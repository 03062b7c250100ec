"""The FLOPs of a traced step, in total and by part: each network's forward, the backwards and the rest
(docs/estimate.md#flops)."""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from refign.alignment.correlation import LocalCorrelation
from refign.engine.backward import LossBackward
from refign.engine.step import TrainStep

# the matcher's local correlation: counted apart (see ``counted_by_part``) and added to the total
CORRELATION = "matcher's local correlation"


def conv_backward_flop(
    grad_out, x, w, _bias, _stride, _pad, _dil, transposed, _out_pad, _groups, output_mask, out_shape=None
) -> int:
    """The FLOPs of ``aten.convolution_backward`` from its arguments' shapes: each gradient it makes (input,
    weight) costs what the forward costs. PyTorch's own formula leaves the groups out of the weight's
    gradient, which counts a depthwise convolution of C channels (MiT's Mix-FFN, the DAFormer head's ASPP) C
    times over."""
    forward = conv_flop_count(x, w, grad_out, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


class StepFlops(FlopCounterMode):
    """``FlopCounterMode`` with ``conv_backward_flop``, without its per-module split (``counted_by_part``
    splits by parts). Its module tracker hooks every module's outputs for their gradients, which keeps the
    tensors that a checkpointed block recomputes in the backward alive: with
    ``backbone.checkpoint_activations`` the traced peak rose above the run without. Relies on the counter's
    ``mod_tracker`` attribute (torch 2.x)."""

    def __init__(self) -> None:
        backward = {torch.ops.aten.convolution_backward: conv_backward_flop}
        super().__init__(display=False, custom_mapping=backward)
        self.mod_tracker = contextlib.nullcontext()  # enters no module: every FLOP counts towards "Global"
        self.mod_tracker.parents = {"Global"}


def method_parts(method: torch.nn.Module) -> dict[str, list[torch.nn.Module]]:
    """The networks whose forward FLOPs are reported apart, as the modules they call (HRDA's student runs
    ``forward_train``, which calls its children, not the segmentor itself)."""
    parts = {"student": list(method.model.children())}
    teacher = getattr(method, "teacher", None)
    if teacher is not None:
        parts["EMA teacher"] = list(teacher.model.children())
    if getattr(method, "imnet_backbone", None) is not None:
        parts["ImageNet copy"] = [method.imnet_backbone]
    aligner = getattr(getattr(method, "pseudo_labeler", None), "aligner", None)
    if aligner is not None:
        parts["matcher"] = [aligner]
    return parts


class CountedBackward(LossBackward):
    """The step's ``backward``, each run's FLOPs added to ``flops['backward']``: a method back-propagates
    all but its last loss inside its forward, so the backward is not simply what follows the forward."""

    def __init__(self, *args, total: Callable[[], int], flops: Counter[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.total, self.flops = total, flops

    def run(self, loss: torch.Tensor, retain_graph: bool) -> None:
        start = self.total()
        super().run(loss, retain_graph)
        self.flops["backward"] += self.total() - start


@contextlib.contextmanager
def counted_by_part(
    counter: FlopCounterMode, method: torch.nn.Module, step: TrainStep
) -> Iterator[Counter[str]]:
    """FLOPs per part (filled in when the block exits): each network's forward, the backwards
    (``CountedBackward``, set as the step's ``loss_backward`` for the block) and the rest of the step
    (losses, augmentation, refinement). Read from the counter's running total around the calls, because its
    own per-module split is unreliable here."""

    def total() -> int:
        return sum(counter.flop_counts["Global"].values())

    flops: Counter[str] = Counter()
    entered: dict[str, int] = {}

    def hooks(name: str, module: torch.nn.Module) -> list:
        def pre(*_):
            entered[name] = total()

        def post(*_):
            flops[name] += total() - entered[name]

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def correlation(module, inputs, _output) -> None:
        # the local correlation's dot products: C multiply-adds per target pixel and displacement, in
        # elementwise products and sums that the counter does not count
        b, c, h, w = inputs[1].shape
        flops["local correlation"] += 2 * b * c * h * w * module.patch_size**2

    handles = [h for name, mods in method_parts(method).items() for m in mods for h in hooks(name, m)]
    handles += [
        m.register_forward_hook(correlation) for m in method.modules() if isinstance(m, LocalCorrelation)
    ]
    step.loss_backward = functools.partial(CountedBackward, total=total, flops=flops)
    try:
        yield flops
    finally:
        for h in handles:
            h.remove()
        del step.loss_backward
    backward = flops.pop("backward", 0)
    correlation_flops = flops.pop("local correlation", 0)
    flops["rest of the forward"] = total() - backward - sum(flops.values())
    flops["backward"] = backward
    if correlation_flops:
        flops[CORRELATION] = correlation_flops
