"""Configuration composition: groups, struct mode and the SLURM launcher (sweeps: tests/test_sweep.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError

from tests.conftest import CONF_DIR

ROOT = Path(CONF_DIR).parent


def test_default_composition_is_daformer_refign_on_the_synthetic_benchmark():
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("train")
    assert cfg.dataset.name == "synthetic"
    assert cfg.backbone.embed_dims == 32 and cfg.schedule.warmup_iters == 50 and cfg.trainer.max_steps == 1000
    assert cfg.uda._target_.endswith("DACS") and cfg.uda.enable_fdist and cfg.rcs  # DAFormer
    assert cfg.refign.enabled and cfg.alignment.pyramid._target_.endswith("PatchPyramid")
    # both start files are the shipped ones
    assert cfg.alignment.checkpoint.endswith("refign/assets/uawarpc_small_synthetic.pt")
    assert cfg.init_weights.endswith("refign/assets/segmentor_synthetic.pt")


def test_unknown_key_and_unknown_group_option_fail_loudly():
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        with pytest.raises(ConfigCompositionException, match="trainer.max_stepz"):
            compose("train", overrides=["trainer.max_stepz=3"])
        with pytest.raises(ConfigCompositionException, match="no_such_backbone"):
            compose("train", overrides=["backbone=no_such_backbone"])
        cfg = compose("train")
    with pytest.raises(ConfigAttributeError):
        _ = cfg.trainer.max_stepz


def test_slurm_launcher_composes():
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
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


def test_every_official_config_has_an_experiment_that_composes():
    found = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    assert found == set(EXPECTED_EXPERIMENTS)
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        for name, (uda, backbone, head, crop, ratio, steps, inference) in EXPECTED_EXPERIMENTS.items():
            c = compose("train", overrides=[f"experiment={name}", "+ablation=row3"])
            got = (
                c.uda._target_.rsplit(".", 1)[1],
                c.backbone._target_.rsplit(".", 1)[1],
                c.head._target_.rsplit(".", 1)[1],
                c.dataset.crop_size[0],
                c.dataset.rcs.min_crop_ratio,
                c.trainer.max_steps,
                c.model.inference,
            )
            assert got == (uda, backbone, head, crop, ratio, steps, inference), name
            assert c.refine.gamma == 0.0 and c.refine.disable_m and c.uda.enable_fdist
            assert c.optim.backbone_lr_factor == 0.1 and c.schedule.warmup_iters == 1500
