"""The smoke matrix: every ``uda`` × ``refign=on|off`` × ``model=segmentor|hrda`` combination that is meant to
work trains one step, and its checkpoint is evaluated and exported (``tests/e2e/conftest.py``); DeepLabV2
too. Every combination that is not meant to work stops at start-up with its error, before training."""

from __future__ import annotations

import pytest

from refign import build
from refign.train import run
from refign.utils.errors import ConfigError
from tests.conftest import compose_cfg
from tests.e2e.conftest import STEP, SYNTHETIC, paths, train_evaluate_predict

ON = ["refign=on", "refine.adapt_to_ref=false"]  # every step aligns and refines
DEEPLABV2 = ["backbone=resnet101", "head=deeplabv2"]

# HRDA's context view is half the crop and MiT's first stage reduces keys by 8: crops of at least 64 px
HRDA = ["dataset.crop_size=[64,64]"]
HRDA_DATA = [*SYNTHETIC, "dataset.size=[64,128]"]

WORKING = {  # name: (overrides, data overrides, self-training, Refign on)
    "source_only-off-segmentor": (
        ["uda=source_only", "refign=off", "model=segmentor"],
        SYNTHETIC,
        False,
        False,
    ),
    "dacs-off-segmentor": (["uda=dacs", "refign=off", "model=segmentor"], SYNTHETIC, True, False),
    "daformer-off-segmentor": (["uda=daformer", "refign=off", "model=segmentor"], SYNTHETIC, True, False),
    "hrda-off-hrda": (["uda=hrda", "refign=off", "model=hrda", *HRDA], HRDA_DATA, True, False),
    "dacs-on-segmentor": (["uda=dacs", *ON, "model=segmentor"], SYNTHETIC, True, True),
    "daformer-on-segmentor": (["uda=daformer", *ON, "model=segmentor"], SYNTHETIC, True, True),
    "hrda-on-hrda": (["uda=hrda", *ON, "model=hrda", *HRDA], HRDA_DATA, True, True),
    "deeplabv2-source_only-off": (
        [*DEEPLABV2, "uda=source_only", "refign=off", "model=segmentor", "init_weights=null"],
        SYNTHETIC,
        False,
        False,
    ),
}

REFUSED = {  # name: (overrides, error, message)
    "source_only-on": (["uda=source_only", "refign=on"], ConfigError, "SourceOnly .* does not self-train"),
    "source_only-hrda": (
        ["uda=source_only", "refign=off", "model=hrda"],
        ValueError,
        "SourceOnly trains only Segmentor",
    ),
    "dacs-hrda": (["uda=dacs", "model=hrda"], ValueError, "DACS trains only Segmentor, .* is HRDASegmentor"),
    "daformer-hrda": (["uda=daformer", "model=hrda"], ValueError, "DACS trains only Segmentor"),
    "hrda-segmentor": (["uda=hrda", "model=segmentor"], ValueError, "HRDA trains only HRDASegmentor"),
    "hrda-deeplabv2": (["uda=hrda", *DEEPLABV2], ValueError, "cannot be combined with HRDA"),
    "ablation-without-refign": (
        ["uda=daformer", "refign=off", "+ablation=row6"],
        ConfigError,
        "add refign=on",
    ),
    "enabled-key-without-group": (
        ["uda=daformer", "refign=off", "refign.enabled=true"],
        ConfigError,
        "refign=on",
    ),
}


@pytest.mark.parametrize("name", list(WORKING))
def test_train_evaluate_predict(tmp_path, matcher_file, name):
    overrides, data, self_training, refign = WORKING[name]
    matcher = [f"alignment.checkpoint={matcher_file}"] if refign else []
    state, lines = train_evaluate_predict(tmp_path, [*overrides, *matcher], data)
    step = next(x for x in lines if "train/loss" in x)
    assert ("train/pseudo_weight" in step) == self_training
    assert ("train/refign/warp_valid_fraction" in step) == refign
    if refign:
        assert step["train/refign/adapt_to_ref"] == 0.0
    # the frozen matcher is a fingerprint in the checkpoint, never weights
    extra = state["method"].get("pseudo_labeler._extra_state", {}).get("aligner")
    assert (extra is not None) is refign
    assert not any("aligner." in k for k in [*state["method"], *state["segmentor"]])


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_before_training(tmp_path, matcher_file, name):
    overrides, error, message = REFUSED[name]
    matcher = [f"alignment.checkpoint={matcher_file}"] if "refign=on" in overrides else []
    cfg = compose_cfg([*paths(tmp_path), *SYNTHETIC, *STEP, *overrides, *matcher])
    with pytest.raises(error, match=message):
        run(cfg, tmp_path / "train")
    assert not (tmp_path / "train" / "metrics.jsonl").exists()


def test_an_ablation_row_with_refign_on_configures_it(tmp_path):
    """Row 1 refines with the un-warped reference: no matcher is built, so nothing is rebuilt from a file."""
    cfg = compose_cfg([*paths(tmp_path), "uda=daformer", "refign=on", "+ablation=row1"])
    labeler = build.build_method(cfg).pseudo_labeler
    assert labeler.aligner is None and not labeler.use_align and labeler.gamma == 0.0
