"""Refign as a pseudo-labeler that any self-training method accepts (docs/refign.md#pseudo-labeler).

The teacher predicts target and reference in one batch; the reference logits are warped onto the target with
the frozen aligner's flow; ``refine`` fuses both into the target probabilities. With probability
``adapt_to_ref_p`` a step adapts on the reference images instead (no refinement then).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from refign.alignment.warp import warp
from refign.data.classes import colorize
from refign.models.weights import CheckpointError, fingerprint
from refign.refine.refiner import refine, trust_score
from refign.uda.pseudo_label import PseudoLabels, teacher_probs
from refign.utils.imaging import resize, to_rgb_uint8


class RefignPseudoLabeler(nn.Module):
    """Align the reference prediction to the target and refine the target pseudo-label with it.

    The aligner is frozen and rebuilt from its file (``aligner_source``) whenever the method is built, so its
    weights stay out of this module's state dict: the state keeps the aligner's source and a fingerprint of its
    weights instead (``get_extra_state``), and loading refuses a state whose aligner had other weights (its
    file changed since the run began) or whose run had none, or the other way round.

    Args:
        aligner: frozen network ``(image_trg, image_ref) -> (flow trg→ref in pixels, certainty (B,1,H,W))``;
            None only with ``use_align=False``.
        aligner_source: where the build took the aligner from (e.g. ``alignment.checkpoint=<file>``), named in
            the error when a resumed run meets another aligner.
        use_align: warp the reference logits (False: ablation row 1, raw reference logits, no mask, P ≡ 0.5).
        adapt_to_ref: with probability ``adapt_to_ref_p`` per batch, adapt on the reference images instead.
        gamma, disable_m, disable_p, renormalize: see ``refine``.
    """

    def __init__(
        self,
        aligner: nn.Module | None,
        aligner_source: str = "",
        use_align: bool = True,
        adapt_to_ref: bool = True,
        adapt_to_ref_p: float = 0.5,
        gamma: float = 0.25,
        disable_m: bool = False,
        disable_p: bool = False,
        renormalize: bool = False,
    ) -> None:
        super().__init__()
        if use_align and aligner is None:
            raise ValueError("refine.use_align=true needs an aligner (alignment=uawarpc)")
        self.aligner = aligner.eval().requires_grad_(False) if aligner is not None else None
        self.aligner_source = aligner_source
        self._aligner_sha256: str | None = None  # hashing is not free: once, the weights are frozen
        self.register_state_dict_post_hook(_drop_aligner_weights)
        self.register_load_state_dict_pre_hook(_keep_aligner_weights)
        self.use_align, self.adapt_to_ref, self.adapt_to_ref_p = use_align, adapt_to_ref, adapt_to_ref_p
        self.gamma, self.disable_m, self.disable_p, self.renormalize = (
            gamma,
            disable_m,
            disable_p,
            renormalize,
        )

    def train(self, mode: bool = True) -> RefignPseudoLabeler:
        """The aligner stays in eval mode (BatchNorm running statistics) whatever the method's mode."""
        super().train(mode)
        if self.aligner is not None:
            self.aligner.eval()
        return self

    # ---- the aligner in checkpoints: a fingerprint, not weights ------------------------------------------------
    def aligner_fingerprint(self) -> dict[str, str] | None:
        """``{"source", "sha256"}`` of the aligner (None without one)."""
        if self.aligner is None:
            return None
        if self._aligner_sha256 is None:
            self._aligner_sha256 = fingerprint(self.aligner)
        return {"source": self.aligner_source, "sha256": self._aligner_sha256}

    def get_extra_state(self) -> dict:
        return {"aligner": self.aligner_fingerprint()}

    def set_extra_state(self, state: dict) -> None:
        saved, now = state.get("aligner"), self.aligner_fingerprint()
        if (saved is None) != (now is None):
            have = "an aligner" if saved else "no aligner"
            raise CheckpointError(
                f"the checkpoint's Refign pseudo-labeler had {have}, this configuration builds "
                f"{'one' if now else 'none'}: resume with the configuration of the run (e.g. refine.use_align)"
            )
        if saved is not None and saved["sha256"] != now["sha256"]:
            raise CheckpointError(
                f"the frozen aligner built from {now['source']} differs from the one this run was trained "
                f"with ({saved['source']}, sha256 {saved['sha256'][:12]}… vs {now['sha256'][:12]}…); "
                "restore that file or start a new run"
            )

    @torch.no_grad()
    def align(
        self,
        logits_ref: torch.Tensor,
        image_ref: torch.Tensor,
        image_trg: torch.Tensor,
        batch: dict[str, torch.Tensor] | None = None,
    ):
        """Reference logits warped into the target frame, the warp's validity mask and the certainty."""
        if getattr(self.aligner, "needs_gt_flow", False):
            flow, certainty = self.aligner(image_trg, image_ref, batch["flow"], batch["flow_valid"])
        else:
            flow, certainty = self.aligner(image_trg, image_ref)
        warped, valid = warp(logits_ref, flow, return_mask=True)
        return warped, valid, certainty

    @torch.no_grad()
    def forward(
        self, teacher: nn.Module, batch: dict[str, torch.Tensor], want_panel: bool = False
    ) -> PseudoLabels:
        image_trg, image_ref = batch["image_trg"], batch.get("image_ref")
        if image_ref is None:
            raise KeyError("refign=on needs reference images: the target dataset must load 'image_ref'")
        if self.adapt_to_ref and random.random() < self.adapt_to_ref_p:
            return PseudoLabels(image_ref, teacher_probs(teacher, image_ref), {"refign/adapt_to_ref": 1.0})
        n = image_trg.shape[0]
        logits = resize(teacher(torch.cat([image_trg, image_ref])), image_trg.shape[-2:])
        logits_trg, logits_ref = logits[:n], logits[n:]
        valid = certainty = None
        if self.use_align:
            logits_ref, valid, certainty = self.align(logits_ref, image_ref, image_trg, batch)
        probs = refine(
            logits_trg,
            logits_ref,
            valid,
            None if self.disable_p else certainty,
            gamma=self.gamma,
            disable_m=self.disable_m,
            renormalize=self.renormalize,
        )
        before = logits_trg.argmax(1)
        # device tensors: the trainer reads them at its logging steps only (no host sync per step)
        stats = {
            "refign/adapt_to_ref": 0.0,
            "refign/trust_s": trust_score(torch.softmax(logits_trg.float(), 1), self.gamma).mean(),
            "refign/changed_fraction": (probs.argmax(1) != before).float().mean(),
            "refign/warp_valid_fraction": valid.float().mean() if valid is not None else 1.0,
        }
        panel = (
            self._panel(image_trg, image_ref, logits_ref, certainty, before, probs) if want_panel else None
        )
        return PseudoLabels(image_trg, probs, stats, panel)

    @staticmethod
    def _panel(image_trg, image_ref, warped_ref, certainty, before, probs) -> np.ndarray:
        """First image of the batch: target | reference | warped ref prediction | certainty | before | after."""

        cert = (
            certainty[0, 0] if certainty is not None else torch.full_like(before[0], 0.5, dtype=torch.float)
        )
        cert = (cert.clamp(0, 1).cpu().numpy()[..., None].repeat(3, -1) * 255).astype(np.uint8)
        tiles = [
            to_rgb_uint8(image_trg[0]),
            to_rgb_uint8(image_ref[0]),
            colorize(warped_ref[0].argmax(0).cpu().numpy()),
            cert,
            colorize(before[0].cpu().numpy()),
            colorize(probs[0].argmax(0).cpu().numpy()),
        ]
        return np.concatenate(tiles, axis=1)


def _drop_aligner_weights(module: RefignPseudoLabeler, state: dict, prefix: str, local_metadata) -> None:
    """State-dict post-hook: the frozen aligner is rebuilt from its file, so its tensors are not saved."""
    for key in [k for k in state if k.startswith(f"{prefix}aligner.")]:
        del state[key]


def _keep_aligner_weights(module: RefignPseudoLabeler, state: dict, prefix: str, *_) -> None:
    """Load pre-hook: a saved state holds no aligner tensors (see above); the rebuilt aligner keeps its own."""
    if module.aligner is not None:
        for key, value in module.aligner.state_dict().items():
            state.setdefault(f"{prefix}aligner.{key}", value)
