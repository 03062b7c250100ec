"""One random state per seed, whatever ran before in the process, and the opt-in deterministic kernels.

A run seeds the global random streams once and then draws from them; anything that draws from them between
the seed and those uses makes the run depend on what the process did before. The case found (issue 15):
``rich``, imported by mmengine under the mmseg backbones, draws from Python's ``random`` at import time, and
was imported after the seed in the first run of a process only (docs/reproducibility.md#how).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from refign.engine import dist
from refign.engine.dist import DistInfo

# cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); ":4096:8" is PyTorch's recommendation.
CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (``torch.manual_seed`` covers every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def target_modules(cfg: DictConfig) -> list[str]:
    """The modules of every ``_target_`` in a configuration, first-seen order, once each (``a.b.C`` → ``a.b``)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and "." in target:
                found.append(target.rpartition(".")[0])
            node = list(node.values())
        if isinstance(node, list):
            for child in node:
                walk(child)

    walk(OmegaConf.to_container(cfg, resolve=False))
    return list(dict.fromkeys(found))


def import_targets(cfg: DictConfig) -> None:
    """Import everything the configuration will instantiate, so that import-time draws from the global
    random streams happen before the run seeds them. A module that cannot be imported is skipped: the build
    reports it with the key that names it."""
    for module in target_modules(cfg):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """``trainer.deterministic`` for the duration of a run (docs/reproducibility.md#gpu). Warn-only: this
    model's bilinear upsampling and cross-entropy have no deterministic CUDA backward, so strict mode would
    stop every GPU run. The torch settings are restored on exit, so that the next run of a sweep starts from
    the process's own; the cuBLAS variable stays (cuBLAS reads it once per process)."""
    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    mode = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark, deterministic = cudnn.benchmark, cudnn.deterministic
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        cudnn.benchmark, cudnn.deterministic = benchmark, deterministic


@contextlib.contextmanager
def task_session(cfg: DictConfig) -> Iterator[DistInfo]:
    """A task's process set-up, the same for every entry point: the configured modules imported before
    anything is seeded (imports may draw from the global random streams), the distributed session, and
    ``trainer.deterministic`` for its duration. A training seeds once it knows where it continues from."""
    import_targets(cfg)
    with dist.session(cfg.trainer.device) as info, deterministic_algorithms(cfg.trainer.deterministic):
        yield info
