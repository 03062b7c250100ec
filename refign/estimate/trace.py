"""One training step of the composed run traced with fake tensors: its memory and FLOPs
(docs/estimate.md#design).

The composed method is built of fake tensors (shapes, dtypes and devices, no data) at its random
initialisation, and ``TrainStep`` runs once on a fake batch of the configured size, after the optimiser's
state has been created (a steady step). Nothing is computed and no file is read, so a paper-scale step
traces in seconds.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from dataclasses import dataclass, field

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict
from torch._subclasses.fake_tensor import FakeTensorMode, is_fake, unset_fake_temporarily
from torch.overrides import TorchFunctionMode

from refign import build
from refign.engine.dist import DistInfo
from refign.estimate.autocast import CudaAutocastPolicy
from refign.estimate.flops import CORRELATION, StepFlops, counted_by_part
from refign.estimate.memory import LiveMemory, phase_hooks


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


def untrained(cfg: DictConfig) -> DictConfig:
    """``cfg`` with every network at its random initialisation and no weight file read: a trace needs the
    sizes only (and ``scripts/measure/validate_estimate.py`` memory, which the weights do not change).
    Refign's matcher keeps its ``alignment.checkpoint``, without which the build refuses Refign, and is made
    by ``random_matcher``, which does not read it."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for key in ("init_weights", "backbone.pretrained", "alignment.vgg_weights"):
            if OmegaConf.select(cfg, key) is not None:
                OmegaConf.update(cfg, key, None)
        if OmegaConf.select(cfg, "alignment.checkpoint") is not None:
            cfg.alignment.network = cfg.alignment._target_
            cfg.alignment._target_ = f"{__name__}.random_matcher"
    return cfg


def random_matcher(network: str, checkpoint: str, **kwargs) -> torch.nn.Module:
    """The matcher ``network`` (its factory's import path) makes from ``kwargs``, at its random
    initialisation: ``checkpoint`` is not read."""
    return get_object(network)(checkpoint=None, **kwargs)


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
            method = build.build_method(untrained(cfg))
        step = build.build_train_step(cfg, method, info, precision)
        method.train()
        batch = fake_batch(cfg, build.method_class(cfg).needs_target)
        memory = LiveMemory()
        params = list(method.parameters())
        memory.track([p for p in params if p.requires_grad], "parameters")
        memory.track([p for p in params if not p.requires_grad], "frozen")
        memory.track(method.buffers(), "frozen")
        memory.track(batch.values(), "batch")
        policy = CudaAutocastPolicy() if precision != "32" else contextlib.nullcontext()
        with phase_hooks(memory, step.optimizer), policy, memory:
            initialise_state(step.optimizer)
            memory.reset_peak()
            before = memory.current
            with StepFlops() as counter, counted_by_part(counter, method, step) as parts:
                step(batch, 0)
    return StepEstimate(
        precision=precision,
        peak=memory.peak,
        breakdown=memory.breakdown(),
        before_step=before,
        flops=counter.get_total_flops() + parts.get(CORRELATION, 0),
        flops_by_part=dict(parts),
        seconds=time.perf_counter() - start,
    )


def aligning(cfg: DictConfig) -> DictConfig:
    """A Refign run traces its aligning step (the heavier one; half the steps adapt on the references)."""
    if cfg.get("refign", {}).get("enabled") and cfg.refine.adapt_to_ref:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.refine.adapt_to_ref = False
    return cfg
