"""Training checkpoints (``FORMAT`` 3, docs/checkpoints.md#training-checkpoint): the inference network's
weights (``segmentor``, all that evaluation and prediction load) apart from the rest of the method and what
resuming needs. A frozen module that the configuration rebuilds from a file (Refign's matcher) keeps only a
fingerprint of its weights, which it checks on resume. Format-2 files evaluate, predict and initialise a run
as before, but are not resumed.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

# the file and the reader that evaluation, prediction, resume and the tests use
from refign.engine.checkpoint_store import LAST as LAST
from refign.engine.checkpoint_store import load as load
from refign.models.weights import CheckpointError, load_strict

FORMAT = 3


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain containers, so that a checkpoint loads with
    ``weights_only=True``: NumPy's legacy tuple with its MT19937 key (624 uint32) as a list of ints."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, key.tolist(), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``'s states (earlier checkpoints hold NumPy's key as an array: read the same)."""
    random.setstate(state["python"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- the method's part of a checkpoint -------------------------------------------------------------------
def segmentor_prefix(method: nn.Module) -> str:
    """Where ``method.inference_model()`` sits among the method's submodules (e.g. ``model``)."""
    target = method.inference_model()
    name = next((n for n, m in method.named_modules() if m is target and n), None)
    if name is None:
        raise ValueError(f"{type(method).__name__}.inference_model() is not one of its submodules")
    return name


def method_entries(method: nn.Module) -> dict[str, Any]:
    """The ``format``, ``segmentor``, ``segmentor_prefix`` and ``method`` entries of a checkpoint."""
    prefix = segmentor_prefix(method)
    return {
        "format": FORMAT,
        "segmentor": method.inference_model().state_dict(),
        "segmentor_prefix": prefix,
        "method": {k: v for k, v in method.state_dict().items() if not k.startswith(f"{prefix}.")},
    }


def check_format(state: dict, source: str, formats: tuple[int, ...] = (FORMAT,)) -> None:
    """Refuse files that are not training checkpoints of one of ``formats``."""
    if "segmentor" not in state:
        raise CheckpointError(
            f"{source} is not a refign training checkpoint (no 'segmentor' entry; keys: {sorted(state)[:8]})"
        )
    if state.get("format") not in formats:
        raise CheckpointError(
            f"{source} is a format-{state.get('format')} checkpoint, this version resumes format {FORMAT} only "
            "(its segmentor still evaluates, predicts and initialises a run: init_weights=<file>)"
        )


def segmentor_state(state: dict, source: str) -> dict[str, torch.Tensor]:
    """The inference weights of a checkpoint (for evaluation, export or initialising a segmentor); format 2
    stored them as format 3 does."""
    check_format(state, source, formats=(2, FORMAT))
    return state["segmentor"]


def method_state(state: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The method's state dict from a checkpoint, rebuilt modules excluded."""
    check_format(state, source)
    prefix = state["segmentor_prefix"]
    return {**state["method"], **{f"{prefix}.{k}": v for k, v in state["segmentor"].items()}}


def restore_method(method: nn.Module, state: dict, source: str) -> None:
    """Load a checkpoint into a freshly built method. Modules that the method rebuilds from files check
    themselves (Refign's aligner: ``RefignPseudoLabeler.set_extra_state``)."""
    try:
        load_strict(method, method_state(state, source), source)
    except CheckpointError as err:
        raise CheckpointError(
            f"{err}; resume with the configuration of the run (the same uda, refign=on|off, …)"
        ) from None
