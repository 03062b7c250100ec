"""The methods through the real Hydra configuration and the engine: uda=dacs|daformer|hrda."""

import math

import pytest
import torch
from hydra.errors import InstantiationException

from refign import build
from refign.models.hrda import HRDASegmentor
from refign.train import run
from refign.uda.dacs import DACS
from refign.uda.hrda import HRDA

BAD_CONFIG = (ValueError, InstantiationException)  # Hydra wraps the constructor's ValueError


@pytest.mark.parametrize("name,cls", [("dacs", DACS), ("daformer", DACS), ("hrda", HRDA)])
def test_train_runs(tiny_cfg, tmp_path, name, cls):
    cfg = tiny_cfg(f"uda={name}", "trainer.max_steps=3", n_train=8, n_val=4)
    assert build.build_method(cfg).__class__ is cls
    results = run(cfg, tmp_path / "run")
    assert all(math.isfinite(r["mIoU"]) for r in results.values())
    if name != "dacs":  # rare class sampling is on, its statistics cached beside the synthetic data
        assert (tmp_path.parent / "synthetic_cache" / "rcs_synthetic_train_source.json").exists()


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
    with pytest.raises(BAD_CONFIG, match="cannot be combined"):
        build.build_method(tiny_cfg(*dlv2, "uda=hrda"))
    assert isinstance(build.build_segmentor(tiny_cfg("uda=hrda")), HRDASegmentor)
