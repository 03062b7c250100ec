"""AdamW with the official parameter groups and the official warm-up + poly schedule."""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, lr: float, weight_decay: float, backbone_lr_factor: float) -> list[dict]:
    """Four groups as in the official ``optimizer_parameters``: (backbone | rest) × (weights | 1-D tensors).

    Only trainable parameters enter (the EMA teacher and frozen copies are excluded); 1-D tensors (biases,
    norm affines) get no weight decay; a name under ``backbone`` gets ``backbone_lr_factor``·lr. Names are
    taken relative to the segmentor, so ``model.backbone.x`` counts as backbone.
    """
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        short = name.split("model.", 1)[1] if name.startswith("model.") else name
        part = "backbone" if short.startswith("backbone") else "head"
        kind = "bias" if p.ndim == 1 else "weight"
        key = f"{part}_{kind}"
        if key not in groups:
            scale = backbone_lr_factor if part == "backbone" else 1.0
            decay = weight_decay if kind == "weight" else 0.0
            groups[key] = {"name": key, "params": [], "lr": lr * scale, "weight_decay": decay}
        groups[key]["params"].append(p)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    backbone_lr_factor: float,
    betas: tuple[float, float],
    eps: float,
    fused: bool | None,
    device: torch.device | None = None,
) -> torch.optim.Optimizer:
    """``fused``: one kernel for the whole update (the same AdamW arithmetic up to rounding), which also skips
    a step on the device when the trainer flags a non-finite loss. None: fused where training runs on CUDA
    (``device``, default: the parameters'), where a host read per step would stall the GPU; the per-tensor
    update elsewhere (bit-identical to the official one)."""
    if fused is None:
        fused = (device or next(model.parameters()).device).type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, lr, weight_decay, backbone_lr_factor),
        lr=lr,
        betas=tuple(betas),
        eps=eps,
        weight_decay=weight_decay,
        fused=fused,
    )


def build_adam(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with coupled L2 weight decay over the trainable parameters: the official matcher training."""
    return torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
    )


def build_multistep(
    optimizer: torch.optim.Optimizer, max_steps: int, milestones: list[float], gamma: float
) -> torch.optim.lr_scheduler.MultiStepLR:
    """Step decay by ``gamma`` at ``milestones`` given as fractions of ``max_steps`` (the official matcher
    schedule, whose step counts scale with the run's length)."""
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [int(f * max_steps) for f in milestones], gamma=gamma
    )


def warmup_poly_factor(
    step: int, warmup_iters: int, warmup_ratio: float, max_steps: int, power: float
) -> float:
    """Official ``LinearWarmupPolynomialLR`` as a factor on the base lr (docs/self-training.md#lr-schedule, docs/quirks.md#q8).

    Linear from ``warmup_ratio`` to 1 over ``warmup_iters``, then ``(1 - (k - W) / (N - W)) ** power``.
    """
    if step < warmup_iters:
        return 1 - (1 - step / warmup_iters) * (1 - warmup_ratio)
    return max(0.0, 1 - (step - warmup_iters) / max(1, max_steps - warmup_iters)) ** power


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_iters: int, warmup_ratio: float, max_steps: int, power: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: warmup_poly_factor(k, warmup_iters, warmup_ratio, max_steps, power)
    )
