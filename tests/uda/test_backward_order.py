"""One backward per loss against the summed single backward it replaced (docs/self-training.md#one-backward-
per-loss): same seed, same data, 20 steps of each method family at the micro size; the weights may differ
only by the order in which each parameter's gradient contributions were summed.

What that order can do after 20 AdamW steps, measured on this project's 2-core CPU (2026-12-06): the
gradients differ by rounding (≈1e-7 relative); AdamW divides each by its own running magnitude, so where a
gradient sits at rounding level the order decides the sign of a whole learning-rate-sized step, and the
teacher's EMA and the next steps' inputs carry it on. The bounds below are those measurements, rounded up.
"""

from __future__ import annotations

import pytest

from refign.engine.trainer import Trainer
from refign.train import run
from tests.methods import METHODS, MICRO, SummedBackward, weights

STEPS = 20
FAMILIES = {
    "daformer": METHODS["daformer_rcs"],
    "hrda": METHODS["hrda"],
    "daformer_refign": METHODS["daformer_rcs_refign"],
    "hrda_refign": METHODS["hrda_refign"],
    "hrda_refign_mic": [*METHODS["hrda_refign"], "mic=on", "mic.block_size=8"],
}
# (largest difference of any weight, share of the weights that differ by more than 1e-5 + 1e-4·|w|)
BOUNDS = {
    "daformer": (1e-3, 0.01),
    "hrda": (1e-3, 0.01),
    "daformer_refign": (1e-3, 0.01),
    "hrda_refign": (1e-3, 0.01),
    "hrda_refign_mic": (1e-3, 0.01),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_equal_the_summed_backward_up_to_summation_order(family, tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(*FAMILIES[family], *MICRO, f"trainer.max_steps={STEPS}", n_train=8, n_val=2)
    run(cfg, tmp_path / "each")
    monkeypatch.setattr(Trainer, "loss_backward", SummedBackward)
    run(cfg, tmp_path / "summed")
    each, summed = (weights(tmp_path / name / "checkpoints" / "last.pt") for name in ("each", "summed"))

    largest, far, total = 0.0, 0, 0
    for key, w in summed.items():
        if not w.is_floating_point():
            assert (each[key] == w).all(), key  # counters (BatchNorm's, the feature distance's) agree
            continue
        gap = (each[key].double() - w.double()).abs()
        largest = max(largest, float(gap.max()))
        far += int((gap > 1e-5 + 1e-4 * w.double().abs()).sum())
        total += w.numel()
    print(f"{family}: largest difference {largest:.2e}, {far} of {total} weights beyond 1e-5 + 1e-4·|w|")
    bound, share = BOUNDS[family]
    assert 0 < largest < bound, largest  # > 0: the two steps did run differently
    assert far <= share * total, (far, total)
