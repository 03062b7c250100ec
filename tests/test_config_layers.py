"""Config groups with one job: datasets describe data, conf/scale/ holds a benchmark's scale, and the
compositions users type resolve to the values they resolved to before the split."""

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
    return OmegaConf.to_container(cfg, resolve=True)


def scale_values(c: dict) -> tuple:
    d = c["dataset"]
    return (
        c["backbone"]["_target_"].rsplit(".", 1)[1],
        c["backbone"].get("embed_dims"),
        Path(c["backbone"]["pretrained"]).name if c["backbone"].get("pretrained") else None,
        c["head"]["_target_"].rsplit(".", 1)[1],
        c["head"].get("embed_dims"),
        d["crop_size"],
        d["batch_size"],
        d.get("source_dims"),
        d.get("target_dims"),
        c["trainer"]["max_steps"],
        c["trainer"]["eval_every"],
        c["trainer"]["checkpoint_every"],
        c["trainer"]["num_workers"],
        c["schedule"]["warmup_iters"],
        c["optim"]["backbone_lr_factor"],
        Path(c["init_weights"]).name if c["init_weights"] else None,
        c["alignment"].get("coarse_size"),
        Path(c["alignment"]["checkpoint"]).name if c["alignment"].get("checkpoint") else None,
    )


# the values these compositions had while the dataset files set the scale (commit 7425a04)
EXPECTED = {
    (): ("mit", 32, None, "DAFormerHead", 64, [128, 128], 2, None, None, 1000, 0, 200, 0, 50, 1.0,
         "segmentor_synthetic.pt", 128, "uawarpc_small_synthetic.pt"),
    ("dataset=acdc", "uda=hrda", "refign=on"): (
        "mit", 64, "mit_b5_mmseg.pth", "DAFormerHead", 256, [512, 512], 2, [512, 1024], [540, 960],
        40000, 4000, 4000, 4, 1500, 0.1, None, 256, None,
    ),
    ("dataset=robotcar",): (
        "mit", 64, "mit_b5_mmseg.pth", "DAFormerHead", 256, [512, 512], 2, [512, 1024], [720, 720],
        20000, 2000, 2000, 4, 1500, 0.1, None, 256, None,
    ),
    ("experiment=acdc_refign_hrda_star",): (
        "mit", 64, "segformer_b5_city_mmseg.pth", "DAFormerHead", 256, [1024, 1024], 2, None, None,
        40000, 4000, 4000, 4, 1500, 0.1, None, 256, "uawarpc_megadepth.ckpt",
    ),
    ("experiment=dark_zurich_refign_deeplabv2",): (
        "resnet_v1c", None, "resnet101_v1c.pth", "DeepLabV2Head", None, [512, 512], 2, [512, 1024],
        [540, 960], 40000, 4000, 4000, 4, 1500, 0.1, None, 256, "uawarpc_megadepth.ckpt",
    ),
}  # fmt: skip


@pytest.mark.parametrize("overrides", list(EXPECTED), ids=lambda o: " ".join(o) or "default")
def test_compositions_keep_their_resolved_scale(overrides):
    assert scale_values(resolved(list(overrides))) == EXPECTED[overrides]


@pytest.mark.parametrize(
    "overrides,pixels,ratio",
    [([], 50, 0.5), (["dataset=acdc"], 3000, 0.5), (["experiment=acdc_refign_hrda_star"], 3000, 2.0)],
)
def test_rare_class_sampling_reads_the_one_spelling(overrides, pixels, ratio):
    c = resolved([*overrides, "rcs=on"])
    assert (c["rcs"]["min_pixels"], c["rcs"]["min_crop_ratio"]) == (pixels, ratio)
    assert c["dataset"]["rcs"]["min_pixels"] == pixels
    assert not {"rcs_min_pixels", "rcs_min_crop_ratio"} & set(c["dataset"])
    # the crop ratio is the sampler's own key (set by the HRDA* recipe), the pixel threshold the data's
    assert set(c["dataset"]["rcs"]) == {"min_pixels"}


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
