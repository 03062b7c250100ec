"""python -m refign.estimate [experiment=…] [trainer.precision=32|bf16|fp16] [any override] — the peak GPU
memory and the FLOPs of one training step, estimated without a GPU (docs/estimate.md).

The composed method (student, EMA teacher, frozen ImageNet copy, Refign's matcher, MIC, HRDA's views) is
built of fake tensors (``FakeTensorMode``: shapes, dtypes and devices, no data), with random initialisation
instead of its weight files, and the trainer's own ``train_step`` runs once on a fake batch of the
configured size, after the optimiser's state has been created (a steady step, not the first).
``LiveMemory`` counts the bytes of live storages and ``FlopCounterMode`` the FLOPs. Nothing is computed
and no file is read, so a paper-scale step traces in seconds (4–15 s for the 12 experiments on 2 cores).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake, unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from refign import build
from refign.alignment.correlation import LocalCorrelation
from refign.engine.autocast_policy import cuda_autocast_policy
from refign.engine.backward import LossBackward
from refign.engine.dist import DistInfo
from refign.engine.live_memory import LiveMemory
from refign.engine.reproducibility import import_targets
from refign.engine.step import AUTO16, PRECISIONS, TrainStep
from refign.task import entry_point

log = logging.getLogger("refign.estimate")
# the matcher's local correlation: counted apart (see ``counted_by_part``) and added to the total
CORRELATION = "matcher's local correlation"
GIB = 2**30
# the estimate's memory categories, in the order they are printed
CATEGORIES = {
    "parameters": "parameters (trained)",
    "frozen": "frozen networks (EMA teacher, ImageNet copy, matcher)",
    "gradients": "gradients",
    "optimizer": "optimiser state",
    "batch": "batch",
    "activations": "activations (forward, kept for the backward)",
    "temporaries": "temporaries (backward, optimiser)",
}


@dataclass
class StepEstimate:
    """One traced configuration: bytes by category at the steady step's peak, FLOPs by part."""

    precision: str
    peak: int  # bytes allocated at the steady step's peak
    breakdown: dict[str, int]
    before_step: int  # bytes live before the step (networks, batch, optimiser state)
    flops: int  # forward + backward of the steady step
    flops_by_part: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def fake_batch(cfg: DictConfig, needs_target: bool) -> dict[str, torch.Tensor]:
    """The batch of one step at the configured batch size and crop, as ``merge_domains`` assembles it."""
    b, (h, w) = cfg.dataset.batch_size, cfg.dataset.crop_size
    batch = {
        "image_src": torch.empty(b, 3, h, w),
        "semantic_src": torch.zeros(b, h, w, dtype=torch.long),
    }
    if needs_target:
        keys = set(build.target_load_keys(cfg))
        batch["image_trg"] = torch.empty(b, 3, h, w)
        if "image_ref" in keys:
            batch["image_ref"] = torch.empty(b, 3, h, w)
        if "flow" in keys:
            batch["flow"] = torch.empty(b, 2, h, w)
            batch["flow_valid"] = torch.ones(b, h, w, dtype=torch.bool)
    return batch


class HostFactories(TorchFunctionMode):
    """While the networks are built: ranges (``linspace``, ``arange``) are made as real tensors, and what is
    computed from real tensors alone stays real: host numbers that constructors read back (mmseg's MiT
    reads its stochastic-depth rates with ``.item()``); tensors made from Python numbers become plain fake
    tensors (their values are never read)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # top-level arguments only: a deep copy passes its whole memo along
        tensors = [t for t in (*args, *(kwargs or {}).values()) if isinstance(t, torch.Tensor)]
        on_real = bool(tensors) and not any(is_fake(t) for t in tensors)
        if func in (torch.linspace, torch.arange) or on_real:
            with unset_fake_temporarily():
                return func(*args, **(kwargs or {}))
        if func is torch.tensor:  # a fake "constant" (e.g. BatchNorm's step count) cannot be deep-copied
            with unset_fake_temporarily():
                value = func(*args, **(kwargs or {}))
            return torch.empty(value.shape, dtype=value.dtype, device=value.device)
        return func(*args, **(kwargs or {}))


def traceable(cfg: DictConfig) -> DictConfig:
    """``cfg`` as the trace runs it: the fused AdamW of a GPU run, and the matcher's local correlation in
    PyTorch (the compiled ``spatial_correlation_sampler`` reads its inputs' data, which fake tensors do not
    have; same output, its loop's temporaries are freed at once)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.optim.fused = True  # as on a GPU: the update skips a non-finite step without a host read
        if "force_torch_correlation" in cfg.get("alignment", {}):
            cfg.alignment.force_torch_correlation = True
    return cfg


def initialise_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimiser's state (AdamW's moments) as the first step would, so that the traced step is
    a steady one: an update with zero gradients."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@contextlib.contextmanager
def phase_hooks(memory: LiveMemory, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Label what the optimiser step finds and makes: the gradients it reads, the state it keeps."""

    def before(opt, *_):
        memory.phase = "temporaries"
        memory.assign(
            [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None], "gradients"
        )

    def after(opt, *_):
        memory.assign([t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)], "optimizer")
        memory.phase = "activations"

    handles = [optimizer.register_step_pre_hook(before), optimizer.register_step_post_hook(after)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP counts towards "Global" only."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc) -> None:
        return None


class StepFlops(FlopCounterMode):
    """``FlopCounterMode`` without its per-module split (``counted_by_part`` splits by parts). Its module
    tracker hooks every module's outputs for their gradients, which keeps the tensors that a checkpointed
    block recomputes in the backward alive: with ``backbone.checkpoint_activations`` the traced peak rose
    above the run without. Relies on the counter's ``mod_tracker`` attribute (torch 2.x)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(display=False, **kwargs)
        self.mod_tracker = _GlobalOnly()


def conv_backward_flop(
    grad_out_shape,
    x_shape,
    w_shape,
    _bias,
    _stride,
    _padding,
    _dilation,
    transposed,
    _output_padding,
    _groups,
    output_mask,
    out_shape=None,
) -> int:
    """Each gradient a convolution's backward makes (input, weight) costs what its forward costs. PyTorch's
    own formula leaves the groups out of the weight's gradient, which counts a depthwise convolution of C
    channels (MiT's Mix-FFN, the DAFormer head's ASPP) C times over."""
    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


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
    """The trainer's ``backward``, each run's FLOPs added to ``flops['backward']``: a method back-propagates
    all but its last loss inside its forward, so the backward is not simply what follows the forward."""

    def __init__(self, *args, total: Callable[[], int], flops: dict[str, int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.total, self.flops = total, flops

    def run(self, loss: torch.Tensor, retain_graph: bool) -> None:
        start = self.total()
        super().run(loss, retain_graph)
        self.flops["backward"] = self.flops.get("backward", 0) + self.total() - start


@contextlib.contextmanager
def counted_by_part(
    counter: FlopCounterMode, method: torch.nn.Module, step: TrainStep
) -> Iterator[dict[str, int]]:
    """FLOPs per part (filled in when the block exits): each network's forward, the backwards
    (``CountedBackward``, set as the step's ``loss_backward`` for the block) and the rest of the step
    (losses, augmentation, refinement). Read from the counter's running total around the calls, because its
    own per-module split is unreliable here."""

    def total() -> int:
        return sum(counter.flop_counts["Global"].values())

    flops: dict[str, int] = {}
    entered: dict[str, int] = {}

    def hooks(name: str, module: torch.nn.Module) -> list:
        def pre(*_):
            entered[name] = total()

        def post(*_):
            flops[name] = flops.get(name, 0) + total() - entered[name]

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def correlation(module, inputs, _output) -> None:
        # the local correlation's dot products: C multiply-adds per target pixel and displacement, in
        # elementwise products and sums that the counter does not count
        b, c, h, w = inputs[1].shape
        flops["local correlation"] = (
            flops.get("local correlation", 0) + 2 * b * c * h * w * module.patch_size**2
        )

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


def trace_step(cfg: DictConfig, precision: str) -> StepEstimate:
    """Build the configured method of fake tensors and trace one training step (see the module doc)."""
    start = time.perf_counter()
    cfg = traceable(cfg)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with FakeTensorMode(allow_non_fake_inputs=True):
        with HostFactories(), warnings.catch_warnings():
            # the EMA teacher and the ImageNet copy are deep copies: torch's Tensor.__deepcopy__ asks each
            # fake tensor for its data pointer, warns that this is a bug, and copies it correctly all the same
            warnings.filterwarnings("ignore", "Accessing the data pointer of FakeTensor", UserWarning)
            method = build.build_method(cfg, weight_files=False)
        step = build.build_train_step(cfg, method, info, precision)
        method.train()
        batch = fake_batch(cfg, build.method_class(cfg).needs_target)
        memory = LiveMemory()
        trained = {id(p) for p in method.parameters() if p.requires_grad}
        memory.track([p for p in method.parameters() if id(p) in trained], "parameters")
        memory.track([p for p in method.parameters() if id(p) not in trained], "frozen")
        memory.track(method.buffers(), "frozen")
        memory.track(batch.values(), "batch")
        policy = cuda_autocast_policy() if precision != "32" else contextlib.nullcontext()
        with phase_hooks(memory, step.optimizer), policy, memory:
            initialise_state(step.optimizer)
            memory.reset_peak()
            before = memory.current
            flop_counter = StepFlops(custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flop})
            with flop_counter as counter, counted_by_part(counter, method, step) as parts:
                step(batch, 0)
    return StepEstimate(
        precision=precision,
        peak=memory.peak,
        breakdown=memory.breakdown(),
        before_step=before,
        flops=counter.get_total_flops() + parts.get(CORRELATION, 0),
        flops_by_part=parts,
        seconds=time.perf_counter() - start,
    )


def aligning(cfg: DictConfig) -> DictConfig:
    """A Refign run traces its aligning step (the heavier one; half the steps adapt on the references)."""
    if cfg.get("refign", {}).get("enabled") and cfg.refine.adapt_to_ref:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.refine.adapt_to_ref = False
    return cfg


def gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def fits(cfg: DictConfig, peak: int) -> list[str]:
    """One line per card: whether the peak plus the allocator's and the context's share fits, and by how much."""
    need = peak * (1 + cfg.estimate.allocator_overhead) + cfg.estimate.cuda_context_mib * 2**20
    lines = []
    for card, mib in cfg.estimate.cards.items():
        room = mib * 2**20 - need
        verdict = "fits" if room >= 0 else "does not fit"
        lines.append(f"  {card}: {verdict} ({'headroom' if room >= 0 else 'short by'} {gib(abs(room))})")
    return lines


def hours(cfg: DictConfig, flops: int, precision: str) -> float:
    """Projected hours for ``trainer.max_steps`` steps on one H100 at the configured utilisation."""
    rate = cfg.estimate.h100_peak_tflops[precision] * 1e12 * cfg.estimate.utilization
    return flops * cfg.trainer.max_steps / rate / 3600


def refign_ratio(est: StepEstimate) -> float | None:
    """FLOPs of an aligning Refign step over those of the same step without Refign, from the trace's parts:
    without Refign there is no matcher, and the teacher labels the B target images instead of the 2·B
    target and reference images (its FLOPs are linear in the batch). None without a matcher."""
    parts = est.flops_by_part
    if "matcher" not in parts:
        return None
    extra = parts["matcher"] + parts.get(CORRELATION, 0) + parts["EMA teacher"] / 2
    return est.flops / (est.flops - extra)


def report(cfg: DictConfig, est: StepEstimate) -> str:
    """The printed summary (estimates, labelled as such)."""
    b, crop = cfg.dataset.batch_size, "×".join(map(str, cfg.dataset.crop_size))
    refign_on = bool(cfg.get("refign", {}).get("enabled"))
    lines = [
        f"ESTIMATE of one training step (fake-tensor trace, {est.seconds:.0f} s): precision {est.precision}, "
        f"batch {b} + {b}, crop {crop}{', Refign aligning' if refign_on else ''}",
        "live at the step's peak, by kind:",
        *(f"  {label:<56} {gib(est.breakdown.get(key, 0))}" for key, label in CATEGORIES.items()),
        f"  {'peak allocated (≈ torch.cuda.max_memory_allocated)':<56} {gib(est.peak)}",
        f"fits (peak + {cfg.estimate.allocator_overhead:.0%} allocator + {cfg.estimate.cuda_context_mib} MiB "
        "CUDA context):",
        *fits(cfg, est.peak),
        f"FLOPs per step (forward + backward): {est.flops / 1e9:,.0f} GFLOP ("
        + ", ".join(f"{k} {v / 1e9:,.0f}" for k, v in est.flops_by_part.items())
        + ")",
    ]
    ratio = refign_ratio(est)
    if ratio is not None:
        p = cfg.refine.adapt_to_ref_p if cfg.refine.adapt_to_ref else 0.0
        lines.append(
            f"Refign's FLOP ratio: {ratio:.2f}× on an aligning step, {(1 - p) * ratio + p:.2f}× per step on "
            f"average ({p:.0%} of the steps adapt on the references: no matcher, teacher on B images)"
        )
    steps = cfg.trainer.max_steps
    peak_tflops = cfg.estimate.h100_peak_tflops[est.precision]
    lines.append(
        f"PROJECTION (not a measurement): {hours(cfg, est.flops, est.precision):.1f} h per {steps // 1000}k "
        f"steps on one H100 at {cfg.estimate.utilization:.0%} of its {peak_tflops} TFLOP/s ({est.precision})"
    )
    return "\n".join(lines)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Trace the composed run, print the report, write estimate.json to out_dir."""
    # the GPU estimated for (A100, H100, RTX 30/40) supports bf16: what ``auto16`` picks there
    precision = "bf16" if str(cfg.trainer.precision) == AUTO16 else str(cfg.trainer.precision)
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {list(PRECISIONS)}, got {precision!r}")
    import_targets(cfg)
    est = trace_step(aligning(cfg), precision)
    print(report(cfg, est), flush=True)
    result = {**asdict(est), "refign_flop_ratio": refign_ratio(est)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "estimate.json").write_text(json.dumps(result, indent=1))
    return result


@entry_point("estimate")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
