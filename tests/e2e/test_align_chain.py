"""The matcher's own pipeline feeding Refign: ``refign.align_train`` stage 1 → stage 2 (started from the
stage-1 checkpoint) → ``refign.train refign=on`` with the stage-2 checkpoint → evaluate and predict."""

from __future__ import annotations

import pytest
import torch

from refign.align_train import run as align_run
from refign.alignment.network import BACKBONE_PREFIX, build_alignment_network
from refign.models.weights import fingerprint
from tests.alignment.test_align_train import align_cfg
from tests.e2e.conftest import train_evaluate_predict

TINY_ALIGN = [
    "dataset.train.size=[32,64]",
    "dataset.train.num_images=2",
    "dataset.eval.num_images=1",
    "trainer.max_steps=1",
    "dataset.batch_size=1",
]


@pytest.mark.slow
def test_stage_1_then_stage_2_then_refign_with_it(tmp_path):
    one = align_run(align_cfg(tmp_path, "stage=1", "seed=0", *TINY_ALIGN), tmp_path / "stage1")["checkpoint"]
    two = align_run(
        align_cfg(tmp_path, "stage=2", "seed=1", f"alignment.checkpoint={one}", *TINY_ALIGN),
        tmp_path / "stage2",
    )["checkpoint"]
    first, second = (torch.load(p, weights_only=False) for p in (one, two))
    assert (first["stage"], second["stage"]) == (1, 2)
    # stage 2 started from stage 1: its frozen (random) VGG is stage 1's, not the one seed 1 draws
    vgg = [k for k in first["state_dict"] if k.startswith(BACKBONE_PREFIX)]
    assert vgg and all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in vgg)

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
    assert recorded["sha256"] == fingerprint(build_alignment_network(checkpoint=two))
