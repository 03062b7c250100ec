"""refign=on end to end: composition, start-up errors, the align plumbing and a training step."""

from __future__ import annotations

import json

import pytest
import torch

from refign import build
from refign.engine.checkpoint import load
from refign.models.weights import CheckpointError
from refign.refine.pseudo_labeler import RefignPseudoLabeler
from refign.task import compose
from refign.train import run
from refign.utils.errors import ConfigError


def refign_cfg(tiny_cfg, *extra):
    return tiny_cfg(
        "refign=on",
        "uda=dacs",
        "dataset.train_target.load_keys=[image,image_ref]",
        *extra,
        n_train=4,
        n_val=2,
    )


def test_refign_has_the_target_set_load_its_references(tiny_cfg, matcher_file):
    """A dataset that names only its images still gives Refign the references: the build adds what it reads."""
    cfg = refign_cfg(
        tiny_cfg, "dataset.train_target.load_keys=[image]", f"alignment.checkpoint={matcher_file}"
    )
    _, target = build.build_train_sets(cfg)
    sample = target[0]
    assert sample["image_ref"].shape == sample["image"].shape and "flow" not in sample


def test_refign_needs_a_fitting_aligner_checkpoint(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match="alignment.checkpoint"):
        build.build_method(refign_cfg(tiny_cfg, "alignment.checkpoint=null"))
    with pytest.raises(CheckpointError, match="not found"):
        build.build_method(refign_cfg(tiny_cfg, f"alignment.checkpoint={tmp_path}/nope.ckpt"))
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": {"alignment_head.bogus": torch.zeros(1)}}, wrong)
    with pytest.raises(CheckpointError, match="alignment_head.bogus"):
        build.build_method(refign_cfg(tiny_cfg, f"alignment.checkpoint={wrong}"))


def test_unequal_target_and_reference_sizes_fail_before_training(
    tiny_cfg, matcher_file, tmp_path, monkeypatch
):
    from refign.data.datasets.synthetic import SyntheticDataset

    real = SyntheticDataset.__getitem__

    def shrunk_ref(self, i):
        sample = real(self, i)
        if "image_ref" in sample:
            sample["image_ref"] = sample["image_ref"][..., :-8]
        return sample

    monkeypatch.setattr(SyntheticDataset, "__getitem__", shrunk_ref)
    with pytest.raises(ConfigError, match="equal size"):
        run(refign_cfg(tiny_cfg, f"alignment.checkpoint={matcher_file}", "trainer.max_steps=1"), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


class ShiftAligner(torch.nn.Module):
    """Claims the reference is the target moved right by ``dx`` pixels: flow = (+dx, 0), certainty 1."""

    def __init__(self, dx: int) -> None:
        super().__init__()
        self.dx = dx

    def forward(self, trg, ref):
        flow = torch.zeros(trg.shape[0], 2, *trg.shape[-2:])
        flow[:, 0] = self.dx
        return flow, torch.ones(trg.shape[0], 1, *trg.shape[-2:])


def test_align_warps_a_shifted_reference_back_onto_the_target():
    logits_trg = torch.randn(1, 19, 8, 16)
    logits_ref = torch.zeros_like(logits_trg)
    logits_ref[..., 3:] = logits_trg[..., :-3]  # the reference sees the scene 3 px further right
    labeler = RefignPseudoLabeler(ShiftAligner(3))
    warped, valid, cert = labeler.align(logits_ref, torch.zeros(1, 3, 8, 16), torch.zeros(1, 3, 8, 16))
    inside = valid[0]
    # strict interior (docs/uawarpc.md#warp): border rows and samples at or past the last column are invalid
    assert inside[1:-1, :12].all() and not inside[:, 12:].any() and not inside[0].any()
    torch.testing.assert_close(warped[0][:, inside], logits_trg[0][:, inside])
    assert cert.eq(1).all()


def test_ablation_rows_set_the_official_switches():
    expected = {  # row: (use_align, disable_m, disable_p, gamma, adapt_to_ref), docs/refign.md#ablation-switches
        1: (False, True, False, 0.0, False),
        2: (True, True, True, 0.0, False),
        3: (True, True, False, 0.0, False),
        4: (True, False, False, 0.0, False),
        5: (True, False, False, 0.25, False),
        6: (True, False, False, 0.25, True),
    }
    for row, values in expected.items():
        cfg = compose("train", overrides=["refign=on", "uda=daformer", f"+ablation=row{row}"])
        r = cfg.refine
        assert (r.use_align, r.disable_m, r.disable_p, r.gamma, r.adapt_to_ref) == values, row
        assert cfg.ablation_row == row  # a config value a dashboard groups by


def test_refign_training_steps_log_refinement_statistics_and_panels(tiny_cfg, matcher_file, tmp_path):
    cfg = refign_cfg(
        tiny_cfg,
        f"alignment.checkpoint={matcher_file}",
        "trainer.max_steps=1",
        "trainer.image_every=1",
        "refine.adapt_to_ref=false",
    )
    run(cfg, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if "train/loss" in x]
    assert len(train) == 1
    for x in train:
        assert 0 <= x["train/refign/warp_valid_fraction"] <= 1 and 0 < x["train/refign/trust_s"] <= 1
    assert len(list((tmp_path / "images").glob("img_refign_*.png"))) == 1
    state = load(tmp_path / "checkpoints" / "last.pt")  # the frozen matcher: a fingerprint, not weights
    recorded = state["method"]["pseudo_labeler._extra_state"]["aligner"]
    assert recorded["source"] == f"alignment.checkpoint={matcher_file}" and len(recorded["sha256"]) == 64
    assert not any("aligner." in k for k in state["method"]) and not any(
        "aligner" in k for k in state["segmentor"]
    )
