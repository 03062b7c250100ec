"""The methods through the real Hydra configuration and the engine: uda=dacs|daformer|hrda."""

import json

import pytest
import torch
from hydra.errors import InstantiationException

from refign import build
from refign.models.hrda import HRDASegmentor
from refign.train import run
from refign.uda.dacs import DACS
from refign.uda.hrda import HRDA

BAD_CONFIG = (ValueError, InstantiationException)  # Hydra wraps the constructor's ValueError


@pytest.mark.parametrize(
    "name,cls,fdist_rcs", [("dacs", DACS, False), ("daformer", DACS, True), ("hrda", HRDA, True)]
)
def test_train_runs_the_method_the_config_names(tiny_cfg, tmp_path, name, cls, fdist_rcs):
    """DACS: source + mixed losses; DAFormer and HRDA add the feature distance and rare class sampling."""
    cfg = tiny_cfg(f"uda={name}", "refign=off", "trainer.max_steps=2", n_train=8, n_val=4)
    assert build.build_method(cfg).__class__ is cls
    run(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "train/loss" in x]
    losses = {k for k in steps[0] if k.startswith("train/loss_")}
    assert len(steps) == 2
    assert losses == {"train/loss_src", "train/loss_mix"} | ({"train/loss_fdist"} if fdist_rcs else set())
    for x in steps:
        assert x["train/loss"] == pytest.approx(sum(x[k] for k in losses), rel=1e-5)
    rcs_cache = tmp_path.parent / "synthetic_cache" / "rcs_synthetic_train_source.json"
    assert rcs_cache.exists() or not fdist_rcs  # its statistics are cached beside the synthetic data


def test_hrda_crop_not_divisible_fails_at_build(tiny_cfg):
    with pytest.raises(BAD_CONFIG, match="not divisible"):
        build.build_method(tiny_cfg("uda=hrda", "dataset.crop_size=[60,60]"))
    with pytest.raises(BAD_CONFIG, match="larger than the image"):
        build.build_method(tiny_cfg("uda=hrda", "model.hr_crop_size=[128,128]"))


def test_deeplabv2_resnet101(tiny_cfg):
    dlv2 = ("backbone=resnet101", "head=deeplabv2")
    cfg = tiny_cfg(*dlv2, "uda=dacs")
    model = build.build_segmentor(cfg)
    keys = set(model.state_dict())
    assert {
        "backbone.stem.0.weight",
        "backbone.layer4.2.bn3.running_var",
        "head.conv2d_list.3.weight",
    } <= keys
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 19, 8, 8)  # output stride 8
    # uda=hrda with DeepLabV2 is refused in tests/e2e/test_matrix.py
    assert isinstance(build.build_segmentor(tiny_cfg("uda=hrda")), HRDASegmentor)
