"""Config groups with one job: datasets describe data, conf/scale/ holds a benchmark's scale, evaluation and
export compose the model as training does."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from refign.task import compose

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")


def resolved(overrides: list[str], config: str = "train") -> dict:
    cfg = compose(config, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["dataset=acdc"],
        ["dataset=robotcar"],
        ["experiment=acdc_refign_hrda_star"],
        ["experiment=acdc_mic_hrda"],
    ],
    ids=lambda o: " ".join(o) or "default",
)
def test_mic_blocks_are_a_sixteenth_of_each_scales_crop(overrides):
    """MIC's blocks at the official share of the crop (64 px on HRDA's 1024² crops, 32 on DAFormer's 512²):
    the scale sets them with its crop, the native-resolution recipes with theirs."""
    c = resolved(overrides)
    assert c["mic"]["block_size"] * 16 == c["dataset"]["crop_size"][0] == c["dataset"]["crop_size"][1]


@pytest.mark.parametrize(
    "overrides,pixels,ratio",
    [([], 50, 0.5), (["dataset=acdc"], 3000, 0.5), (["experiment=acdc_refign_hrda_star"], 3000, 2.0)],
)
def test_rare_class_sampling_takes_its_threshold_from_the_data(overrides, pixels, ratio):
    """The pixel threshold is a statistic of the source labels (the dataset's: official 3000 px on Cityscapes),
    the crop ratio the sampler's (HRDA*: 2.0 on its 1024² crops)."""
    c = resolved([*overrides, "rcs=on"])
    assert (c["rcs"]["min_pixels"], c["rcs"]["min_crop_ratio"]) == (pixels, ratio)


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "dataset").rglob("*.yaml")), ids=lambda p: p.stem)
def test_dataset_files_describe_data_only(path):
    """A dataset file sets ``dataset.*`` and at most names the scale its benchmark is trained at."""
    text = yaml.safe_load(path.read_text())
    assert set(text) <= {"defaults", "dataset"}, path.name
    overrides = [d for d in text.get("defaults", []) if isinstance(d, dict)]
    assert all(list(d) in (["override /scale"],) for d in overrides), overrides


def test_scale_can_be_chosen_apart_from_the_dataset():
    c = resolved(["scale=paper"])  # the synthetic data at the paper's scale
    assert c["dataset"]["name"] == "synthetic" and c["trainer"]["max_steps"] == 40000
    assert c["backbone"]["embed_dims"] == 64 and c["dataset"]["crop_size"] == [512, 512]


def test_sweep_folders_are_named_by_their_overrides():
    cfg = compose("train", overrides=["seed=1"], return_hydra_config=True)
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["subdir"] == "${hydra.job.num}_${dirname:${hydra.job.override_dirname}}"  # cut if long
    assert "paths.output_dir" in cfg.hydra.job.config.override_dirname.exclude_keys


@pytest.mark.parametrize(
    "overrides",
    [[], ["dataset=acdc", "uda=hrda", "refign=on"], ["experiment=acdc_refign_hrda_star"], ["scale=paper"]],
    ids=lambda o: " ".join(o) or "default",
)
@pytest.mark.parametrize("entry", ["eval", "predict"])
def test_eval_and_predict_inherit_the_training_model_groups(entry, overrides):
    """An override that describes a model for training describes the same model for evaluation/export."""
    train, other = resolved(overrides), resolved([*overrides, "checkpoint=x.pt"], entry)
    for node in ("backbone", "head", "model", "dataset", "init_weights"):
        assert other[node] == train[node], node
    assert other["task_name"] == entry and other["split"] == "val" and other["use_checkpoint_config"]


@pytest.mark.parametrize(
    "overrides,dilations",
    [
        (["uda=hrda"], [1, 3, 6, 9]),  # the synthetic scale's half-size HRDA views (docs/deviations.md#d5)
        (["uda=daformer"], [1, 6, 12, 18]),  # DAFormer keeps the official head at every scale
        (["dataset=acdc", "uda=hrda"], [1, 6, 12, 18]),
        (["experiment=acdc_refign_hrda_star"], [1, 6, 12, 18]),
    ],
)
def test_hrda_head_dilations_follow_the_scale(overrides, dilations):
    assert resolved(overrides)["head"]["dilations"] == dilations
