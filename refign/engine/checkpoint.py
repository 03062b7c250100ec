"""Atomic training checkpoints with everything needed to continue bit-for-bit: weights, optimiser,
scheduler, AMP scaler, step and every random number generator."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from refign.models.weights import CheckpointError

log = logging.getLogger(__name__)
LAST = "last.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike) -> dict:
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to unpickle makes the file unusable
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err


def find_latest(runs_root: Path) -> Path | None:
    """The most recently written ``checkpoints/last.pt`` under ``runs_root`` (for ``resume=auto``)."""
    candidates = list(runs_root.glob(f"*/checkpoints/{LAST}")) if runs_root.is_dir() else []
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
