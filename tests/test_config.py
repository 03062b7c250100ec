"""Configuration composition: groups, struct mode, sweeps and the SLURM launcher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigAttributeError

from tests.conftest import CONF_DIR

ROOT = Path(CONF_DIR).parent


def test_default_composition_is_the_synthetic_benchmark():
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("train")
    assert cfg.dataset.name == "synthetic"
    assert cfg.backbone.embed_dims == 32 and cfg.uda._target_.endswith("SourceOnly")
    assert cfg.schedule.warmup_iters == 50 and cfg.trainer.max_steps == 1000


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


def test_two_point_multirun_sweep(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "refign.train",
        "-m",
        "seed=0,1",
        "debug=fast",
        "trainer.max_steps=2",
        f"paths.output_dir={tmp_path}",
        f"paths.cache_dir={tmp_path}/cache",
        "dataset.train_source.num_images=4",
        "dataset.val.source.num_images=2",
        "dataset.val.target.num_images=2",
        "dataset.size=[32,64]",
        "dataset.crop_size=[32,32]",
        "head.channels=16",
        "head.embed_dims=16",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(tmp_path.glob("train/multirun/*/*/checkpoints/last.pt"))
    assert len(jobs) == 2
    assert out.stdout.count("target-val mIoU") == 2
