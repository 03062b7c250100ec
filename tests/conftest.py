"""Shared helpers: compose the real Hydra configuration with small, fast overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, open_dict

import refign  # noqa: F401  (registers the resolvers the configs use, e.g. ``${package_path:assets}``)
from refign import task

CONF_DIR = str(task.CONF_DIR)

# Two threads (the project's 2-core budget) unless OMP_NUM_THREADS says otherwise: on a shared machine, two
# spinning OpenMP threads per process make the tiny models of the tests 10-20x slower than one.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


def tiny_overrides(tmp: Path, n_train: int = 32, n_val: int = 16) -> list[str]:
    """A configuration that trains in seconds: tiny head, few images, small crops, no workers. The method is
    stated, not taken from the defaults: source-only without Refign unless a test overrides ``uda``/``refign``
    (later overrides win), from scratch rather than from the shipped segmentor (``init_weights=null``)."""
    return [
        "uda=source_only",
        "refign=off",
        "init_weights=null",
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
    cfg = task.compose(config_name, overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(Path(CONF_DIR).parent)
    return cfg


def build_matcher(small: bool = True, checkpoint: str | None = None) -> torch.nn.Module:
    """The synthetic benchmark's CPU-scale matcher (``alignment=uawarpc_small``) or the paper's (``uawarpc``),
    built from its real config."""
    from hydra.utils import instantiate

    name = "uawarpc_small" if small else "uawarpc"
    cfg = compose_cfg([f"alignment={name}", f"alignment.checkpoint={checkpoint or 'null'}"])
    return instantiate(cfg.alignment)


def save_matcher(path: Path, seed: int, small: bool = True) -> Path:
    """A matcher checkpoint with the official key layout and random weights (plumbing, not accuracy)."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": build_matcher(small).state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def matcher_file(tmp_path_factory) -> str:
    """One random-init matcher file per test session, for ``refign=on alignment.checkpoint=…`` on the synthetic
    benchmark (whose matcher is the CPU-scale one)."""
    return str(save_matcher(tmp_path_factory.mktemp("matcher") / "uawarpc_small.ckpt", seed=0))


class Payload:
    """What an attack on a weight file looks like: read with full pickle it runs code, here creating
    ``marker``. ``torch.save`` and ``np.savez`` pickle it as a call of ``builtins.exec``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return exec, (f"open({self.marker!r}, 'w').close()",)


@dataclass
class Poisoner:
    """Poisoned files whose code, if it ever runs, creates ``marker`` (the tests assert it stays absent)."""

    marker: Path

    def payload(self) -> Payload:
        return Payload(self.marker)

    def torch_file(self, path: Path, content: dict | None = None) -> Path:
        """``content`` (e.g. a real checkpoint) with the payload added, written by ``torch.save``."""
        torch.save({**(content or {}), "payload": self.payload()}, path)
        return path


@pytest.fixture
def poison(tmp_path) -> Poisoner:
    return Poisoner(tmp_path / "payload_ran")


def numpy_miou(pairs: list[tuple[np.ndarray, np.ndarray]], over_present: bool = False) -> float:
    """mIoU (%) of (prediction, label) train-id maps, written independently of ``refign.engine.metrics``."""
    cm = np.zeros((19, 19), np.int64)
    for pred, label in pairs:
        keep = label != 255
        np.add.at(cm, (label[keep].astype(int), pred[keep].astype(int)), 1)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = np.where(union > 0, np.diag(cm) / np.maximum(union, 1), 0.0)
    if over_present:
        iou = iou[cm.sum(1) > 0]
    return round(100 * iou.mean(), 2)


@pytest.fixture
def tiny_cfg(tmp_path):
    """Factory: ``tiny_cfg(*extra_overrides)`` → a composed config writing under ``tmp_path``."""
    return lambda *extra, **kw: compose_cfg(tiny_overrides(tmp_path, **kw) + list(extra))


def pytest_collection_modifyitems(config, items) -> None:
    """``gpu`` tests run where CUDA is available and are reported as skipped elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
