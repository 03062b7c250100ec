"""Refign's adaptive label correction (docs/refign.md#refine): fuse the teacher's target prediction with the aligned
reference prediction, trusting the reference more where the target is uncertain, the match is certain and
both agree on a large static class.

Pure tensor maths, no modules and no state, so that it can be tested against the formulas directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from refign.data.classes import CLASS_IDS

# Cityscapes train ids of the classes whose appearance changes little between drives (docs/refign.md#large-static-classes).
LARGE_STATIC_CLASSES: tuple[int, ...] = tuple(
    CLASS_IDS[c] for c in ("road", "sidewalk", "building", "wall", "fence", "vegetation", "terrain", "sky")
)


def normalized_entropy(probs: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """η = −Σ_c p_c log p_c / log C per pixel, in [0, 1]: (B, C, H, W) → (B, H, W)."""
    return -(probs * torch.log(probs.clamp(min=eps))).sum(1) / torch.log(torch.tensor(float(probs.shape[1])))


def trust_score(probs_trg: torch.Tensor, gamma: float) -> torch.Tensor:
    """s = mean(η)^γ per image (B,): the less sure the target prediction, the more the reference counts."""
    return normalized_entropy(probs_trg).flatten(1).mean(1) ** gamma


def large_static_mask(
    pred_trg: torch.Tensor,
    pred_ref: torch.Tensor,
    num_classes: int,
    classes: Sequence[int] = LARGE_STATIC_CLASSES,
) -> torch.Tensor:
    """M (B, C, H, W): 1 on the large-static channels where both argmaxes are large-static classes."""
    cls = torch.as_tensor(list(classes), device=pred_trg.device)
    both = torch.isin(pred_trg, cls) & torch.isin(pred_ref, cls)
    channel = torch.zeros(num_classes, dtype=torch.bool, device=pred_trg.device)
    channel[cls] = True
    return (both[:, None] & channel[None, :, None, None]).float()


def refine(
    logits_trg: torch.Tensor,
    logits_ref: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    certainty: torch.Tensor | None = None,
    gamma: float = 0.25,
    disable_m: bool = False,
    constant_certainty: float = 0.5,
    renormalize: bool = False,
    static_classes: Sequence[int] = LARGE_STATIC_CLASSES,
) -> torch.Tensor:
    """Refined target probabilities p̃ = (1 − ε)·p_T + ε·p_R with ε = s·max(P, M), ε = 0 where the warp is
    invalid.

    Args:
        logits_trg: teacher logits on the target, (B, C, H, W).
        logits_ref: teacher logits on the reference, warped into the target frame (or not, ablation row 1).
        valid_mask: (B, H, W) bool, False where the warp samples outside the reference; None = all valid.
        certainty: (B, 1, H, W) matching certainty P_R; None (``disable_P`` / no alignment) = ``constant_certainty``.
        gamma: exponent of the trust score (0 → s = 1).
        disable_m: drop the large-static-class mask (M ≡ 0).
        renormalize: divide p̃ by its channel sum. Off by default as in the official code (docs/quirks.md#r1),
            whose p̃ does not sum to one where M raises only the large-static channels.
        static_classes: the ids of M's large static classes (the Cityscapes ones by default).
    """
    p_trg = torch.softmax(logits_trg.float(), dim=1)
    p_ref = torch.softmax(logits_ref.float(), dim=1)
    s = trust_score(p_trg, gamma)[:, None, None, None]
    p = torch.full_like(p_trg[:, :1], constant_certainty) if certainty is None else certainty.float()
    if disable_m:
        eps = s * p.expand_as(p_trg)
    else:
        m = large_static_mask(p_trg.argmax(1), p_ref.argmax(1), p_trg.shape[1], static_classes)
        eps = s * torch.maximum(p.expand_as(p_trg), m)
    if valid_mask is not None:
        eps = eps * valid_mask[:, None].float()
    refined = (1 - eps) * p_trg + eps * p_ref
    return refined / refined.sum(1, keepdim=True) if renormalize else refined
