"""Shared helpers: compose the real Hydra configuration with small, fast overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# Two threads (the project's 2-core budget) unless OMP_NUM_THREADS says otherwise: on a shared machine, two
# spinning OpenMP threads per process make the tiny models of the tests 10-20x slower than one.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def tiny_overrides(tmp: Path, n_train: int = 32, n_val: int = 16) -> list[str]:
    """A configuration that trains in seconds: tiny head, few images, small crops, no workers."""
    return [
        f"paths.output_dir={tmp}/outputs",
        f"paths.cache_dir={tmp.parent}/synthetic_cache",
        f"dataset.train_source.num_images={n_train}",
        f"dataset.train_target.num_images={n_train}",
        f"dataset.val.source.num_images={n_val}",
        f"dataset.val.target.num_images={n_val}",
        "dataset.size=[64,128]",
        "dataset.crop_size=[64,64]",
        "trainer.num_workers=0",
        "trainer.log_every=1",
        "trainer.checkpoint_every=0",
        "trainer.eval_every=0",
        "schedule.warmup_iters=5",
    ]


def compose_cfg(overrides: list[str], config_name: str = "train") -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path(CONF_DIR).parent)
    return cfg


@pytest.fixture
def tiny_cfg(tmp_path):
    """Factory: ``tiny_cfg(*extra_overrides)`` → a composed config writing under ``tmp_path``."""
    return lambda *extra, **kw: compose_cfg(tiny_overrides(tmp_path, **kw) + list(extra))
