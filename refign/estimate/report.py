"""The estimate as printed: memory by kind, whether it fits the configured cards, FLOPs by part, Refign's
FLOP ratio and a projected training time — each labelled an estimate or a projection."""

from __future__ import annotations

from omegaconf import DictConfig

from refign.estimate.flops import CORRELATION
from refign.estimate.trace import StepEstimate

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
