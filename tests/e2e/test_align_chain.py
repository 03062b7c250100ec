"""The matcher's own pipeline feeding Refign: ``refign.align_train`` stage 1 → stage 2 (started from the
stage-1 checkpoint) → ``refign.train refign=on`` with the stage-2 checkpoint → evaluate and predict."""

from __future__ import annotations

import pytest
import torch

from refign.align_train import run as align_run
from refign.build import build_matcher, stage_cfg
from refign.models.weights import fingerprint
from tests.alignment.test_align_train import align_cfg
from tests.e2e.conftest import train_evaluate_predict

TINY_ALIGN = [
    "align_stages@stages=official",  # both official stages (the synthetic schedule has only stage 1)
    "pairs.train.size=[32,64]",
    "pairs.train.num_images=2",
    "pairs.eval.num_images=1",
    "trainer.max_steps=1",
    "pairs.batch_size=1",
]


@pytest.mark.slow
def test_stage_1_then_stage_2_then_refign_with_it(tmp_path):
    one = align_run(align_cfg(tmp_path, "stage=1", "seed=0", *TINY_ALIGN), tmp_path / "stage1")["checkpoint"]
    stage2 = align_cfg(tmp_path, "stage=2", "seed=1", f"alignment.checkpoint={one}", *TINY_ALIGN)
    two = align_run(stage2, tmp_path / "stage2")["checkpoint"]
    checkpoints = [torch.load(p, weights_only=True) for p in (one, two)]
    assert [c["stage"] for c in checkpoints] == [1, 2]
    first, second = (c["state_dict"] for c in checkpoints)
    # stage 2 started from stage 1's weights and took one Adam step, which moves no parameter by more than the
    # learning rate (batch-norm statistics follow the batch instead); a start from seed 1's initialisation
    # would differ by the initialisation's scale
    assert first.keys() == second.keys()
    params = [
        k for k in first if first[k].is_floating_point() and not k.endswith(("running_mean", "running_var"))
    ]
    moved = max((first[k] - second[k]).abs().max().item() for k in params)
    assert 0 < moved <= 1.01 * stage_cfg(stage2).lr

    state, lines = train_evaluate_predict(
        tmp_path,
        [
            "uda=daformer",
            "refign=on",
            "refine.adapt_to_ref=false",
            "model=segmentor",
            f"alignment.checkpoint={two}",
        ],
    )
    assert next(x for x in lines if "train/loss" in x)["train/refign/adapt_to_ref"] == 0.0
    recorded = state["method"]["pseudo_labeler._extra_state"]["aligner"]
    assert recorded["source"] == f"alignment.checkpoint={two}"
    stage2_matcher = build_matcher(align_cfg(tmp_path, "mode=eval", f"alignment.checkpoint={two}"))
    assert recorded["sha256"] == fingerprint(stage2_matcher)
