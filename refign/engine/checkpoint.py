"""Training checkpoints: what inference needs apart from what resuming needs, written atomically.

A checkpoint (``FORMAT`` 2) holds

* ``segmentor``: the weights of the method's inference network (``method.inference_model()``), all that
  ``refign.evaluate`` / ``refign.predict`` load, into a segmentor they rebuild alone;
* ``method``: the rest of the method's state (EMA teacher, frozen ImageNet copy, counters), without the
  segmentor (``segmentor_prefix`` says where it sits in the method) and without *rebuilt* modules;
* ``rebuilt``: for every frozen module that the configuration rebuilds from a file (Refign's matcher, marked
  by the build with :func:`mark_rebuilt`), its source and a fingerprint of its weights instead of the weights;
* optimiser, scheduler, AMP scaler, step, every random number generator and the resolved configuration.

Format 1 (earlier versions) held the whole method, matcher included, under ``model``;
``python scripts/convert_checkpoint.py legacy OLD NEW`` rewrites such a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from refign.models.weights import CheckpointError, load_strict

log = logging.getLogger(__name__)
LAST = "last.pt"
FORMAT = 2
REBUILT_ATTR = "rebuilt_from"


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


def resolve_resume(resume: str | None, runs_root: Path, run_dir: Path) -> tuple[Path | None, Path]:
    """The checkpoint to resume from and the run directory to keep writing to, for ``resume`` = null (fresh
    run), ``auto`` (the newest ``last.pt`` under ``runs_root``, i.e. of this task) or a checkpoint path."""
    if resume in (None, "", False):
        return None, run_dir
    if resume == "auto":
        latest = find_latest(runs_root)
        if latest is None:
            log.info("resume=auto: no previous run under %s, starting fresh", runs_root)
            return None, run_dir
        return latest, latest.parent.parent
    path = Path(resume)
    return path, path.parent.parent if path.parent.name == "checkpoints" else run_dir


def find_latest(runs_root: Path) -> Path | None:
    """The most recently written ``checkpoints/last.pt`` under ``runs_root`` (for ``resume=auto``)."""
    candidates = list(runs_root.glob(f"*/checkpoints/{LAST}")) if runs_root.is_dir() else []
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


# ---- rebuilt modules -------------------------------------------------------------------------------------
def mark_rebuilt(module: nn.Module, source: str) -> nn.Module:
    """Declare ``module`` frozen and rebuilt from ``source`` (a file named by the configuration) whenever the
    method is built: checkpoints then store its fingerprint instead of its weights."""
    setattr(module, REBUILT_ATTR, source)
    return module


def rebuilt_modules(method: nn.Module) -> dict[str, nn.Module]:
    """The outermost marked submodules of ``method`` by name."""
    found: dict[str, nn.Module] = {}
    for name, module in method.named_modules():
        if getattr(module, REBUILT_ATTR, None) is not None and not any(
            name.startswith(f"{outer}.") for outer in found
        ):
            found[name] = module
    return found


def fingerprint(module: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a module's state (independent of the file's
    container format, so a renamed or re-saved file with the same weights still matches)."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe_rebuilt(method: nn.Module) -> dict[str, dict[str, str]]:
    """``{name: {"source", "sha256"}}`` of the method's rebuilt modules (what a checkpoint records)."""
    return {
        name: {"source": getattr(m, REBUILT_ATTR), "sha256": fingerprint(m)}
        for name, m in rebuilt_modules(method).items()
    }


# ---- the method's part of a checkpoint -------------------------------------------------------------------
def segmentor_prefix(method: nn.Module) -> str:
    """Where ``method.inference_model()`` sits among the method's submodules (e.g. ``model``)."""
    target = method.inference_model()
    name = next((n for n, m in method.named_modules() if m is target and n), None)
    if name is None:
        raise ValueError(f"{type(method).__name__}.inference_model() is not one of its submodules")
    return name


def method_entries(method: nn.Module, rebuilt: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The ``format``, ``segmentor``, ``segmentor_prefix``, ``method`` and ``rebuilt`` entries of a checkpoint;
    ``rebuilt`` is :func:`describe_rebuilt` of the method (hashing is not free: the caller computes it once)."""
    prefix = segmentor_prefix(method)
    skip = (f"{prefix}.", *(f"{name}." for name in rebuilt))
    return {
        "format": FORMAT,
        "segmentor": method.inference_model().state_dict(),
        "segmentor_prefix": prefix,
        "method": {k: v for k, v in method.state_dict().items() if not k.startswith(skip)},
        "rebuilt": rebuilt,
    }


def check_format(state: dict, source: str) -> None:
    """Refuse files that are not format-2 training checkpoints, saying how to convert an older one."""
    if state.get("format") == FORMAT and "segmentor" in state:
        return
    if "model" in state:
        raise CheckpointError(
            f"{source} is a checkpoint of an earlier refign version (the whole method under 'model'); "
            f"convert it once with: python scripts/convert_checkpoint.py legacy {source} <new.pt>"
        )
    raise CheckpointError(
        f"{source} is not a refign training checkpoint (no 'segmentor' entry; keys: {sorted(state)[:8]})"
    )


def segmentor_state(state: dict, source: str) -> dict[str, torch.Tensor]:
    """The inference weights of a checkpoint (for evaluation, export or initialising a segmentor)."""
    check_format(state, source)
    return state["segmentor"]


def method_state(state: dict, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The method's state dict from a checkpoint, rebuilt modules excluded."""
    check_format(state, source)
    prefix = state["segmentor_prefix"]
    return {**state["method"], **{f"{prefix}.{k}": v for k, v in state["segmentor"].items()}}


def restore_method(method: nn.Module, state: dict, source: str, rebuilt: dict | None = None) -> None:
    """Load a checkpoint into a freshly built method, whose rebuilt modules came from their files again.

    Refuses when the method rebuilds other modules than the checkpoint recorded, or when a rebuilt module's
    weights differ from those the run was trained with (its file changed). ``rebuilt`` is
    :func:`describe_rebuilt` of the method when the caller has it already.
    """
    current = describe_rebuilt(method) if rebuilt is None else rebuilt
    saved = state.get("rebuilt")
    if saved is None:  # converted from format 1, which recorded nothing about them
        log.warning("%s records no fingerprints: %s taken as rebuilt now, unchecked", source, sorted(current))
        saved = current
    if set(current) != set(saved):
        raise CheckpointError(
            f"{source} was written with rebuilt modules {sorted(saved)}, this configuration builds "
            f"{sorted(current)}: resume with the configuration of the run (e.g. the same refign=on|off)"
        )
    for name, now in current.items():
        if now["sha256"] != saved[name]["sha256"]:
            raise CheckpointError(
                f"{source}: the frozen {name} built from {now['source']} differs from the one this run was "
                f"trained with ({saved[name]['source']}, sha256 {saved[name]['sha256'][:12]}… vs "
                f"{now['sha256'][:12]}…); restore that file or start a new run"
            )
    own = method.state_dict()
    kept = {k: v for k, v in own.items() if k.startswith(tuple(f"{name}." for name in current))}
    load_strict(method, {**method_state(state, source), **kept}, source)
