"""Loading weights from local files with errors that name the file and the offending keys."""

from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from refign.utils.safe_load import CheckpointError, load_torch


class WeightsMismatchError(CheckpointError):
    """A readable weight file whose tensors do not fit the model (missing, unexpected or mis-shaped keys)."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapping ``state_dict`` / ``model`` containers (Lightning, earlier
    refign checkpoints) or the ``segmentor`` entry of a refign training checkpoint. Read without running
    code (``refign.utils.safe_load``)."""
    obj = load_torch(path)
    for key in ("state_dict", "model", "segmentor"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return obj


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str, prefix: str = "") -> None:
    """``load_state_dict(strict=True)`` whose error lists missing, unexpected and mis-shaped keys.

    ``prefix`` is where ``module`` sits in the file (e.g. ``alignment_head.``, already stripped from
    ``state``): the report names keys as the file does, so the user can find them there.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    # extra states (e.g. Refign's aligner fingerprint) are not tensors and have no shape
    shapes = sorted(
        k for k in set(own) & set(state) if torch.is_tensor(own[k]) and own[k].shape != state[k].shape
    )
    if missing or unexpected or shapes:

        def show(keys: list[str]) -> str:
            keys = [prefix + k for k in keys]
            return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")

        parts = [
            f"{name} ({len(keys)}): {show(keys)}"
            for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if keys
        ]
        where = f" ('{prefix}*')" if prefix else ""
        raise WeightsMismatchError(
            f"weights in {source} do not fit {type(module).__name__}{where}: " + "; ".join(parts)
        )
    module.load_state_dict(state)


def load_backbone_weights(module: nn.Module, path: str | os.PathLike) -> None:
    """Backbone weights: keep ``backbone.*`` keys (prefix stripped) if present, drop decode-head keys."""
    state = read_state_dict(path)
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "decode_head."))}
    load_strict(module, state, str(path))


def segmentor_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The segmentor weights in a file: a bare segmentor state dict (``backbone.*``, ``head.*``…), a training
    checkpoint of this project (its ``segmentor`` entry), or one of an earlier version (the student under
    ``model.*`` of the whole method)."""
    state = read_state_dict(path)
    if not any(k.startswith(("backbone.", "head.")) for k in state):
        student = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        if student:
            state = student
    return state


def init_segmentor(segmentor: nn.Module, path: str | os.PathLike) -> list[str]:
    """Initialise a whole segmentor (backbone + decode head) from ``path`` before training.

    Every tensor of the file must fit; tensors missing from the file are allowed only under the prefixes the
    segmentor class declares in ``init_optional_prefixes`` (HRDA's scale attention, which a plain segmentor
    does not have and which starts from scratch, as in the official HRDA). Returns the keys left at their
    fresh initialisation.
    """
    state = segmentor_state(path)
    optional = tuple(getattr(segmentor, "init_optional_prefixes", ()))
    own = segmentor.state_dict()
    fresh = sorted(k for k in set(own) - set(state) if k.startswith(optional)) if optional else []
    load_strict(segmentor, {**{k: own[k] for k in fresh}, **state}, f"{path} (init_weights)")
    return fresh


def fingerprint(module: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a module's state (independent of the file's
    container format, so a renamed or re-saved file with the same weights still matches)."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
