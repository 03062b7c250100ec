"""Configuration composition: groups, struct mode, the SLURM launcher and the official experiments (sweep
folder names: tests/test_config_layers.py; a sweep point equals the run alone: tests/test_reproducibility.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError

from refign import build
from refign.task import compose
from tests.conftest import CONF_DIR

ROOT = Path(CONF_DIR).parent


def test_default_composition_is_daformer_refign_on_the_synthetic_benchmark():
    cfg = compose("train")
    assert cfg.dataset.name == "synthetic"
    assert cfg.backbone.embed_dims == 32 and cfg.schedule.warmup_iters == 50 and cfg.trainer.max_steps == 1000
    assert cfg.uda._target_.endswith("DACS") and cfg.uda.enable_fdist and cfg.rcs.enabled  # DAFormer
    assert cfg.refign.enabled and cfg.alignment.pyramid._target_.endswith("PatchPyramid")
    # both start files are the shipped ones
    assert cfg.alignment.checkpoint.endswith("refign/assets/uawarpc_small_synthetic.pt")
    assert cfg.init_weights.endswith("refign/assets/segmentor_synthetic.pt")


def test_unknown_key_and_unknown_group_option_fail_loudly():
    with pytest.raises(ConfigCompositionException, match="trainer.max_stepz"):
        compose("train", overrides=["trainer.max_stepz=3"])
    with pytest.raises(ConfigCompositionException, match="no_such_backbone"):
        compose("train", overrides=["backbone=no_such_backbone"])
    cfg = compose("train")
    with pytest.raises(ConfigAttributeError):
        _ = cfg.trainer.max_stepz


def test_slurm_launcher_composes():
    cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1


EXPECTED_EXPERIMENTS = {  # docs/self-training.md#benchmark-values: (uda, backbone, head, crop, rcs min_crop_ratio, max_steps, inference)
    "acdc_refign_daformer": ("DACS", "mit", "DAFormerHead", 512, 0.5, 40000, "whole"),
    "acdc_refign_deeplabv2": ("DACS", "resnet_v1c", "DeepLabV2Head", 512, 0.5, 40000, "whole"),
    "acdc_refign_hrda_star": ("HRDA", "mit", "DAFormerHead", 1024, 2.0, 40000, "slide"),
    "dark_zurich_refign_daformer": ("DACS", "mit", "DAFormerHead", 512, 0.5, 40000, "whole"),
    "dark_zurich_refign_deeplabv2": ("DACS", "resnet_v1c", "DeepLabV2Head", 512, 0.5, 40000, "whole"),
    "dark_zurich_refign_hrda_star": ("HRDA", "mit", "DAFormerHead", 1024, 2.0, 40000, "slide"),
    "robotcar_refign_daformer": ("DACS", "mit", "DAFormerHead", 512, 0.5, 20000, "whole"),
    "robotcar_refign_deeplabv2": ("DACS", "resnet_v1c", "DeepLabV2Head", 512, 0.5, 20000, "whole"),
}


# lhoyer/MIC experiments.py id 80 (Cityscapes → ACDC / Dark Zurich): MIC(HRDA) = HRDA on the ImageNet MiT-B5,
# 1024² crops, rare-class crops of ratio 2.0, 1024² slide windows at stride 512, MIC in mask_mode "separate"
# (one source + one target image, no colour augmentation), 64-px blocks, ratio 0.7, λ 1; with or without Refign
EXPECTED_MIC_EXPERIMENTS = {  # name: Refign on
    "acdc_mic_hrda": False,
    "acdc_refign_mic_hrda": True,
    "dark_zurich_mic_hrda": False,
    "dark_zurich_refign_mic_hrda": True,
}


def test_every_official_config_has_an_experiment_that_composes():
    found = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    assert found == set(EXPECTED_EXPERIMENTS) | set(EXPECTED_MIC_EXPERIMENTS)
    for name, (uda, backbone, head, crop, ratio, steps, inference) in EXPECTED_EXPERIMENTS.items():
        c = compose("train", overrides=[f"experiment={name}", "+ablation=row3"])
        got = (
            c.uda._target_.rsplit(".", 1)[1],
            c.backbone._target_.rsplit(".", 1)[1],
            c.head._target_.rsplit(".", 1)[1],
            c.dataset.crop_size[0],
            c.rcs.min_crop_ratio,
            c.trainer.max_steps,
            c.model.inference,
        )
        assert got == (uda, backbone, head, crop, ratio, steps, inference), name
        assert c.refine.gamma == 0.0 and c.refine.disable_m and c.uda.enable_fdist
        assert c.optim.backbone_lr_factor == 0.1 and c.schedule.warmup_iters == 1500


def test_the_mic_experiments_are_the_official_mic_hrda_runs():
    for name, refign in EXPECTED_MIC_EXPERIMENTS.items():
        c = compose("train", overrides=[f"experiment={name}"])
        assert c.dataset.name == name.split("_mic")[0].removesuffix("_refign"), name
        assert c.uda._target_.endswith(".HRDA") and c.uda.enable_fdist and c.uda.teacher_eval_mode
        assert c.uda.ema_momentum == 0.999 and c.uda.pseudo_label_threshold == 0.968
        assert (c.uda.psweight_ignore_top, c.uda.psweight_ignore_bottom) == (0, 0)  # no plcrop: ACDC/DZ
        assert c.uda.hr_loss_weight == 0.1 and c.rcs.enabled and c.rcs.min_crop_ratio == 2.0
        assert c.backbone.pretrained.endswith("/mit_b5_mmseg.pth")  # ImageNet MiT-B5
        assert c.head._target_.endswith("DAFormerHead")
        assert c.dataset.crop_size == [1024, 1024] and c.dataset.source_dims is None
        assert c.dataset.target_dims is None
        assert (c.model.inference, c.model.crop_size, c.model.stride) == (
            "slide",
            [1024, 1024],
            [512, 512],
        )
        assert c.trainer.max_steps == 40000 and c.optim.lr == 6e-4 and c.optim.backbone_lr_factor == 0.1
        mic = c.mic
        assert mic._target_.endswith("MaskedImageConsistency")
        assert (mic.block_size, mic.ratio, mic.loss_weight) == (64, 0.7, 1.0)
        assert (mic.images, mic.augment) == ("source_and_target", False), name
        assert c.refign.enabled is refign, name
        keys = ["image", "image_ref"] if refign else ["image"]
        assert build.target_load_keys(c) == keys, name
        if refign:
            assert c.alignment.checkpoint.endswith("/uawarpc_megadepth.ckpt")
            assert c.refine.adapt_to_ref and c.refine.gamma == 0.25
        assert c.task_name == name.replace("acdc_", "").replace("dark_zurich_", "") + "_" + c.dataset.name
