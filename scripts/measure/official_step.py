"""This project's training step against the official one, on the same networks, weights and batch (issue 28).

    python -m scripts.measure.official_step                      # every configuration, a markdown table
    python -m scripts.measure.official_step hrda mic_hrda --repeats 9

The official step is transcribed (``official_step``: the order of its EMA update, passes and backward calls,
and how long its locals keep tensors alive), each quantity computed by this project's code, so both steps make
the same update. Memory: each side's peak rise in a child process of its own (the official side's gradients,
kept from one step to the next, added); time: the ratio of the median steps, alternated in one process.
docs/estimate.md#official-step says how and why.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from collections.abc import Callable

import torch
from omegaconf import DictConfig

from refign import build
from refign.build.common import build_optimizer, build_schedule
from refign.engine.checkpoint import rng_state, set_rng_state
from refign.estimate.trace import aligning
from refign.refine.pseudo_labeler import RefignPseudoLabeler
from refign.uda.dacs import DACS
from refign.uda.pseudo_label import PseudoLabels, teacher_probs
from refign.utils.imaging import resize
from scripts.measure.common import (
    CPU,
    ChildError,
    compose_here,
    peak_rise,
    random_batch,
    run_json_child,
    seeded_method,
)

MMAP_THRESHOLD = 16 * 1024  # a freed tensor leaves the resident set
MIB = 2**20
# name → (the table's label, the overrides of the synthetic benchmark's README commands)
CONFIGS = {
    "daformer": ("DAFormer", ["refign=off"]),
    "daformer_refign": ("DAFormer + Refign", ["refign=on"]),
    "hrda": ("HRDA", ["uda=hrda", "refign=off"]),
    "hrda_refign": ("HRDA + Refign", ["uda=hrda", "refign=on"]),
    "mic_hrda": ("MIC(HRDA)", ["uda=hrda", "refign=off", "mic=on"]),
}
Step = Callable[[dict, int], object]  # (batch, step index) → one optimiser step


# ---- the official step, transcribed ------------------------------------------------------------------------
def official_step(
    method: DACS,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batch: dict[str, torch.Tensor],
    step: int,
) -> None:
    """One official training step of ``method``: ``zero_grad`` first (mmcv's ``DACS.train_step``,
    Lightning's ``training_step`` alike), the forward with one backward per loss — Refign's
    ``training_step`` when the method pseudo-labels with Refign, lhoyer's ``DACS.forward_train``
    otherwise — then the update and the schedule's step."""
    if not isinstance(method, DACS):
        raise ValueError(f"official_step transcribes the self-training steps, not {type(method).__name__}")
    refign_on = isinstance(method.pseudo_labeler, RefignPseudoLabeler)
    if refign_on and method.mic is not None:
        raise ValueError("no official step combines Refign with MIC: choose refign=off or mic=off")
    optimizer.zero_grad()
    (refign_training_step if refign_on else dacs_forward_train)(method, batch, step)
    optimizer.step()
    scheduler.step()


def dacs_forward_train(method: DACS, batch: dict[str, torch.Tensor], step: int) -> None:
    """lhoyer/MIC ``seg/mmseg/models/uda/dacs.py``, ``DACS.forward_train`` (DAFormer, HRDA and MIC share it):
    EMA update; source loss back-propagated with ``retain_graph=enable_fdist``, then the feature distance;
    pseudo-labels and ClassMix; mixed loss; MIC's masked loss last.

    Lifetimes, as there: ``clean_losses`` (the dict of the source losses) lives until the function returns
    (only ``src_feat`` and the summed ``clean_loss`` are deleted), so with the feature distance the retained
    graph of the source pass's decode head stays alive all step; so do ``pseudo_label``, ``pseudo_weight``,
    the mixed images, labels and weights, and ``mix_losses``. The teacher's logits and softmax are freed once
    the pseudo-labels are made (``del ema_logits``; ``MixedBatch`` keeps no probabilities either).
    """
    images, labels = batch["image_src"], batch["semantic_src"]
    method.teacher.update(method.model, step)  # _init_ema_weights at iteration 0, _update_ema after
    enable_fdist = method.imnet_backbone is not None
    clean_losses, src_feat = method.segmentation_loss(images, labels)
    clean_losses.backward(retain_graph=enable_fdist)
    if enable_fdist:
        feat_loss = method.fdist_loss(images, labels, src_feat)
        feat_loss.backward()
        del feat_loss
    del src_feat
    mixed = method.mixed_batch(batch)
    pseudo_label, pseudo_weight, target_img = mixed.pseudo_label, mixed.pseudo_weight, mixed.target
    mixed_img, mixed_lbl, mixed_seg_weight = mixed.image, mixed.label, mixed.weight
    del mixed
    mix_losses = method.segmentation_loss(mixed_img, mixed_lbl, mixed_seg_weight)[0]  # return_feat=False
    mix_losses.backward()
    if method.mic is not None:
        masked_loss = masking_consistency(method, batch, target_img, pseudo_label, pseudo_weight)
        masked_loss.backward()


def masking_consistency(
    method: DACS,
    batch: dict[str, torch.Tensor],
    target_img: torch.Tensor,
    pseudo_label: torch.Tensor,
    pseudo_weight: torch.Tensor,
) -> torch.Tensor:
    """lhoyer/MIC ``seg/mmseg/models/uda/masking_consistency_module.py``, ``MaskingConsistencyModule.__call__``
    with the host's pseudo-labels (``mask_alpha='same'``): the masked images are its locals, freed when it
    returns the loss, before the caller's backward."""
    masked = method.mic.masked_batch(
        target_img, pseudo_label, pseudo_weight, batch["image_src"], batch["semantic_src"]
    )
    return method.mic.loss_weight * method.segmentation_loss(masked.image, masked.label, masked.weight)[0]


def refign_training_step(method: DACS, batch: dict[str, torch.Tensor], step: int) -> None:
    """brdav/refign ``models/segmentation_model.py``, ``DomainAdaptationSegmentationModel.training_step``:
    ``update_momentum_encoder``; source loss (``manual_backward(loss_src, retain_graph=enable_fdist)``), the
    feature distance; under ``no_grad`` the teacher on target and reference in one batch, ``align``,
    ``refine``, ``get_dacs_mix``; the mixed loss (``manual_backward(mixed_loss)``).

    Lifetimes, as there: every local lives until the step returns — the source logits and features
    (``logits_src, feats_src``; with the feature distance their retained graph), the teacher's logits on both
    images, the warped reference logits, the warp's mask and certainty, the refined probabilities, the mixed
    images, labels and weights, the mixed prediction. ``get_dacs_mix``'s pseudo-labels are its locals.
    """
    labeler: RefignPseudoLabeler = method.pseudo_labeler
    method.teacher.update(method.model, step)  # update_momentum_encoder
    images_src, gt_src = batch["image_src"], batch["semantic_src"]
    logits_src, feats_src = method.student_forward(images_src)
    loss_src = method.output_loss(logits_src, gt_src)
    enable_fdist = method.imnet_backbone is not None
    loss_src.backward(retain_graph=enable_fdist)
    if enable_fdist:
        loss_featdist_src = method.fdist_loss(images_src, gt_src, feats_src)
        loss_featdist_src.backward()
    with torch.no_grad():
        if labeler.adapt_to_ref and random.random() < labeler.adapt_to_ref_p:
            images_trg = batch["image_ref"]
            m_probs_trg = teacher_probs(method.teacher, images_trg)
        else:
            images_trg, images_ref = batch["image_trg"], batch["image_ref"]
            b = images_trg.shape[0]
            m_logits = resize(method.teacher(torch.cat((images_trg, images_ref))), images_trg.shape[-2:])
            m_logits_trg, m_logits_ref = torch.split(m_logits, [b, b])
            warp_mask = warp_certs = None
            warped_m_logits_ref = m_logits_ref
            if labeler.use_align:
                warped_m_logits_ref, warp_mask, warp_certs = labeler.align(
                    m_logits_ref, images_ref, images_trg, batch
                )
            m_probs_trg = labeler.refine(m_logits_trg, warped_m_logits_ref, warp_mask, warp_certs)
        mixed = method.mix(batch, PseudoLabels(images_trg, m_probs_trg))
        mixed_img, mixed_lbl, mixed_weight = mixed.image, mixed.label, mixed.weight
        del mixed  # get_dacs_mix returns these three
    mixed_pred = method.student_forward(mixed_img)[0]
    mixed_loss = method.output_loss(mixed_pred, mixed_lbl, mixed_weight)
    mixed_loss.backward()


# ---- both steps on one configuration --------------------------------------------------------------------------
def compose(name: str, overrides: list[str] | None = None) -> DictConfig:
    """The configuration ``name`` of ``CONFIGS`` (plus ``overrides``), Refign aligning on every step."""
    return aligning(compose_here("estimate", [*CONFIGS[name][1], *(overrides or [])]))


def official_side(cfg: DictConfig, method: DACS) -> Step:
    """The transcribed official step on ``method``, with the configured optimiser and schedule."""
    optimizer = build_optimizer(cfg, method)
    scheduler = build_schedule(cfg, optimizer)
    return lambda batch, index: official_step(method, optimizer, scheduler, batch, index)


def project_side(cfg: DictConfig, method: DACS) -> Step:
    """This project's step, as ``python -m refign.train`` runs it."""
    return build.build_train_step(cfg, method, CPU, "32")


SIDES: dict[str, Callable[[DictConfig, DACS], Step]] = {"official": official_side, "ours": project_side}


class Pair:
    """Both steps of one configuration in this process, on two identical copies of the method: ``run``
    steps each once from the same random state and returns their times (official, ours)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.ours = seeded_method(cfg)
        self.official = copy.deepcopy(self.ours)
        self.steps = (official_side(cfg, self.official), project_side(cfg, self.ours))
        self.batch = random_batch(cfg, torch.Generator().manual_seed(0))

    def run(self, index: int) -> tuple[float, float]:
        """Step ``index`` of both sides, the official one first at even indices (so that neither side always
        runs on the caches the other left)."""
        state, times = rng_state(), [0.0, 0.0]
        for side in (0, 1) if index % 2 == 0 else (1, 0):
            set_rng_state(state)
            start = time.perf_counter()
            self.steps[side](self.batch, index)
            times[side] = time.perf_counter() - start
        return times[0], times[1]


def time_ratio(name: str, repeats: int) -> float:
    """Median step time of ours over the official's, alternated in one process after one warm-up step."""
    pair = Pair(compose(name))
    pair.run(0)
    times = [pair.run(index) for index in range(1, repeats + 1)]
    return statistics.median(t[1] for t in times) / statistics.median(t[0] for t in times)


def child(name: str, side: str) -> dict[str, int]:
    """One side's memory: the warm-up step, then the measured one (see the module's docstring)."""
    cfg = compose(name)
    method = seeded_method(cfg)
    step = SIDES[side](cfg, method)
    batch = random_batch(cfg, torch.Generator().manual_seed(0))
    step(batch, 0)
    kept_grads = sum(p.grad.nbytes for p in method.parameters() if p.grad is not None)
    rise = peak_rise(step, batch, 1)
    return {"peak": rise + kept_grads, "rise": rise, "kept_grads": kept_grads}


def run_child(name: str, side: str) -> dict[str, int]:
    try:
        return run_json_child("scripts.measure.official_step", [side, name], 20.0, MMAP_THRESHOLD)
    except ChildError as err:
        raise RuntimeError(f"the {side} step of {name}: {err}") from err


def table_row(label: str, official: int, ours: int, time: float) -> str:
    return f"| {label} | {official / MIB:.1f} | {ours / MIB:.1f} | {ours / official:.2f} | {time:.2f} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(CONFIGS)} (default: all)")
    p.add_argument("--repeats", type=int, default=9, help="timed steps per side (after one warm-up)")
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args()
    unknown = sorted(set(args.names) - set(CONFIGS))
    if unknown:
        p.error(f"unknown configuration(s) {unknown}: choose from {', '.join(CONFIGS)}")
    if args.child:
        print(json.dumps(child(args.names[0], args.child)))
        return
    print("| config | official peak MiB | ours MiB | ratio | time ratio |\n|---|---|---|---|---|", flush=True)
    for name in args.names or CONFIGS:
        peaks = [run_child(name, side)["peak"] for side in SIDES]
        print(table_row(CONFIGS[name][0], *peaks, time_ratio(name, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
