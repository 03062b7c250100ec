"""Every ``conf/experiment/*.yaml`` built — the method with its matcher, the pretrained backbone and every
dataset — on tiny fixture trees with the real layouts, a tiny backbone of the experiment's architecture and
a matcher file made here; and (slow) trained one step, evaluated and exported."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from refign import build
from refign.alignment.network import build_alignment_network
from refign.models.backbones import mit, resnet_v1c
from refign.models.weights import fingerprint, read_state_dict
from refign.refine.pseudo_labeler import RefignPseudoLabeler
from refign.uda.dacs import DACS
from refign.uda.hrda import HRDA
from refign.uda.mic import MaskedImageConsistency
from refign.uda.pseudo_label import TeacherSoftmax
from tests.conftest import CONF_DIR, compose_cfg, save_matcher
from tests.data import trees
from tests.e2e.conftest import STEP, paths, train_evaluate_predict

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
TINY_MIT = dict(embed_dims=8, num_layers=[1, 1, 1, 1], num_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1])
PRETRAINED = {  # the file each recipe names, by backbone
    "mit": ("mit_b5_mmseg.pth", "segformer_b5_city_mmseg.pth"),
    "resnet": ("resnet101_v1c.pth",),
}


@pytest.fixture(scope="session")
def experiment_env(tmp_path_factory) -> Path:
    """Data trees of every benchmark, the pretrained backbone files and the matcher the recipes name."""
    root = tmp_path_factory.mktemp("experiments")
    data = root / "data"
    trees.cityscapes_to_acdc_and_dark_zurich(data)
    trees.robotcar_labelled(data / "RobotCar")
    trees.robotcar_pairs(
        data / "RobotCar",
        [
            ("overcast-reference/rear/1.jpg", "night/rear/2.jpg"),
            ("overcast-reference/rear/3.jpg", "dawn/rear/4.jpg"),
        ],
    )
    weights = root / "pretrained"
    weights.mkdir()
    torch.manual_seed(0)
    mit_state = mit(**TINY_MIT, mlp_ratio=4, drop_path_rate=0.0).state_dict()
    torch.save(mit_state, weights / PRETRAINED["mit"][0])  # converted ImageNet MiT: mmseg names
    torch.save(
        {"state_dict": {f"backbone.{k}": v for k, v in mit_state.items()}}, weights / PRETRAINED["mit"][1]
    )
    resnet = resnet_v1c(101, strides=[1, 2, 1, 1], dilations=[1, 1, 2, 4])
    torch.save(resnet.state_dict(), weights / PRETRAINED["resnet"][0])
    save_matcher(weights / "uawarpc_megadepth.ckpt", seed=1, small=False)
    return root


def tiny(name: str, env: Path, tmp: Path) -> tuple[list[str], list[str]]:
    """(training overrides, data overrides) that shrink an experiment, keeping its architecture. HRDA's
    context view is half the crop, and MiT's first stage reduces keys by 8: HRDA needs 64-px crops."""
    side = 64 if "hrda" in name else 32
    dims = f"[{side},{2 * side}]"
    data = [f"paths.data_root={env}/data", f"dataset.source_dims={dims}", f"dataset.target_dims={dims}"]
    if name.startswith("robotcar"):  # RobotCar val/test are read at native size: 8×16 in the fixtures
        data += [f"+dataset.val.robotcar.dims={dims}", f"+dataset.test.robotcar.dims={dims}"]
    model = [
        f"paths.pretrained_dir={env}/pretrained",
        "dataset.rcs.min_pixels=1",
        f"dataset.crop_size=[{side},{side}]",
    ]
    model += [f"model.crop_size=[{side},{side}]", f"model.stride=[{side // 2},{side // 2}]"]  # HRDA* slides
    if "deeplabv2" not in name:
        model += [f"backbone.{k}={v}".replace(" ", "") for k, v in TINY_MIT.items()]
        model += ["head.channels=16", "head.embed_dims=16"]
    if "hrda" in name:
        model += ["model.attention_channels=16"]
    return [f"experiment={name}", *paths(tmp), *data, *STEP, *model], [f"experiment={name}", *data]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_builds(experiment_env, tmp_path, name):
    train_overrides, _ = tiny(name, experiment_env, tmp_path)
    cfg = compose_cfg(train_overrides)
    method = build.build_method(cfg)
    assert type(method) is (HRDA if "hrda" in name else DACS) and method.imnet_backbone is not None
    assert isinstance(method.mic, MaskedImageConsistency) is ("mic" in name)
    labeler = method.pseudo_labeler
    refign = "refign" in name
    if refign:
        assert isinstance(labeler, RefignPseudoLabeler) and labeler.use_align and labeler.adapt_to_ref
        matcher = experiment_env / "pretrained" / "uawarpc_megadepth.ckpt"
        assert labeler.aligner_source == f"alignment.checkpoint={matcher}"
        assert fingerprint(labeler.aligner) == fingerprint(build_alignment_network(checkpoint=str(matcher)))
    else:
        assert isinstance(labeler, TeacherSoftmax)
    backbone_file = experiment_env / "pretrained" / Path(cfg.backbone.pretrained).name
    stored = {k.removeprefix("backbone."): v for k, v in read_state_dict(backbone_file).items()}
    for key, value in method.model.backbone.state_dict().items():
        assert torch.equal(value, stored[key]), key

    source, target = build.build_train_sets(cfg)
    crop = (3, *cfg.dataset.crop_size)
    pair = target[0]
    assert source[0]["image"].shape == pair["image"].shape == crop
    assert ("image_ref" in pair) is refign and (not refign or pair["image_ref"].shape == crop)
    for node in ("val", "test", "predict"):
        datasets = build.build_datasets(cfg, node)
        assert datasets, node
        for ds in datasets.values():
            assert len(ds) > 0 and ds[0]["image"].shape[0] == 3


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_evaluates_predicts(experiment_env, tmp_path, name):
    train_overrides, data = tiny(name, experiment_env, tmp_path)
    state, lines = train_evaluate_predict(tmp_path, train_overrides, data)
    extra = state["method"].get("pseudo_labeler._extra_state", {}).get("aligner")
    assert (extra is not None) is ("refign" in name)  # the matcher as a fingerprint, not as weights
    assert not any(k.startswith("pseudo_labeler.aligner.") for k in state["method"])
    assert any("train/pseudo_weight" in x for x in lines)
    assert any("train/loss_mic" in x for x in lines) is ("mic" in name)
