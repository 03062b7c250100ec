"""Reading weight, checkpoint and scene-info files without running any code they hold: a pickle can call
any Python function while it is read, and users bring files from the internet. Every loader of the project
reads through ``load_torch`` (``weights_only=True`` plus ``ALLOWED``, each original that could do more than
hold data mapped to an inert stand-in) or ``load_npz`` (object arrays through an unpickler that builds only
arrays around plain containers); anything else is refused unread (docs/checkpoints.md#safe-loading).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

try:  # NumPy 2 (arrays pickled by NumPy 1 name numpy.core.multiarray, listed beside it below)
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1
    from numpy.core import multiarray as _multiarray

DOCS = "docs/checkpoints.md#safe-loading"
CONVERT = "python -m scripts.convert_checkpoint clean {path} <clean copy> --trust-pickle"


class CheckpointError(RuntimeError):
    """A weight file that does not exist, cannot be read or does not fit the model."""


class UnsafeFileError(CheckpointError, ValueError):
    """A file refused unread because unpickling it needs globals outside the allow-list. It is a
    ``ValueError`` too, so the data checks that report unreadable files report it with the rest."""


# ---- the allow-list of torch.load ---------------------------------------------------------------------
class TorchFunctions:
    """Stands in for ``torch._C._VariableFunctionsClass``: since torch 1.5.1 (pytorch/pytorch#38033) a pickled
    ``torch.mean`` is ``getattr(torch._C._VariableFunctionsClass, "mean")``, and Lightning 1.5 pickles the
    reduction of every logged value (``_Metadata.reduce_fx``, torch.mean by default) and of its states
    (``_reductions``, torch.sum) into the loops' state (pytorch_lightning/trainer/connectors/logger_connector/
    result.py, ``ResultMetric.__getstate__``; loops/base.py, ``Loop.state_dict``)."""


@dataclass(frozen=True)
class Unloaded:
    """What a checkpoint holds in place of a function refign never calls (its name, for inspection)."""

    name: str


# the reductions Lightning 1.5 accepts in self.log (result.py, _Metadata._parse_reduce_fx)
LIGHTNING_REDUCTIONS = ("mean", "sum", "max", "min")


def lightning_reduction(owner: object, name: str) -> Unloaded:
    """Stands in for ``builtins.getattr``, answering only what Lightning's reductions need: anything but
    ``getattr(torch._C._VariableFunctionsClass, <reduction>)`` is refused (a real getattr would hand a file
    any torch function, ``torch.from_file`` among them)."""
    if owner is TorchFunctions and name in LIGHTNING_REDUCTIONS:
        return Unloaded(f"torch.{name}")
    owner_name = next((n for obj, n in ALLOWED if obj is owner), type(owner).__name__)
    raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {owner_name}.{name}")


# (stand-in or original, the name a file gives it). Only data constructors are let through as themselves.
ALLOWED: list[tuple[Any, str]] = [
    # Lightning 1.5 (official Refign .ckpt, uawarpc_megadepth.ckpt): see TorchFunctions
    (TorchFunctions, "torch._C._VariableFunctionsClass"),
    (lightning_reduction, "builtins.getattr"),
    # Lightning 0.8-0.9 stored ``model.hparams`` itself, an AttributeDict (a dict with attribute access);
    # 1.x stores dict(model.hparams) (trainer/connectors/checkpoint_connector.py, dump_checkpoint)
    (dict, "pytorch_lightning.utilities.parsing.AttributeDict"),
    # NumPy arrays: the random state (np.random.get_state(), a uint32 key) of format-3 training checkpoints
    # written before the states became lists; only the uint32 dtype's class can be built
    (_multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    (_multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (np.ndarray, "numpy.ndarray"),
    (np.dtype, "numpy.dtype"),
    (type(np.dtype(np.uint32)), f"numpy.dtypes.{type(np.dtype(np.uint32)).__name__}"),
]


def refusal(path: str | os.PathLike, needs: Sequence[str], remedy: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path}: refused, nothing of it was run: reading it needs {', '.join(needs)}, which refign does not "
        f"load (only tensors, arrays, plain containers and the globals of {DOCS}). {remedy}"
    )


def load_torch(path: str | os.PathLike, what: str = "weight file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with ``ALLOWED``; ``what`` names the file in errors."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(ALLOWED):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        needs = unsafe_globals(path, str(err))
        if not needs:  # not a global: a damaged pickle, or an operation the safe unpickler lacks
            reason = re.search(r"WeightsUnpickler error: (.*)", str(err))
            raise CheckpointError(f"cannot read {what} {path}: {reason[1] if reason else err}") from None
        remedy = f"If you trust it after inspecting it, write a clean copy: {CONVERT.format(path=path)}"
        raise refusal(path, needs, remedy) from None
    except Exception as err:  # noqa: BLE001 - any other failure to read makes the file unusable
        raise CheckpointError(f"cannot read {what} {path}: {err}") from err


def unsafe_globals(path: str | os.PathLike, message: str) -> list[str]:
    """What a checkpoint needs beyond the allow-list, read without unpickling: every such global of a
    zip-format file; else the global or the pickle operation (protocol >= 4) the safe unpickler stopped at."""
    found: list[str] = []
    if zipfile.is_zipfile(path):
        with torch.serialization.safe_globals(ALLOWED), contextlib.suppress(pickle.UnpicklingError):
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    # torch's message drops the "builtins." of a builtin ("GLOBAL exec")
    found = found or [n if "." in n else f"builtins.{n}" for n in re.findall(r"GLOBAL ([\w.]+)", message)]
    # a file pickled with protocol >= 4 (torch.save(pickle_protocol=4)) stops at an operation of that protocol;
    # any other unknown byte is damage, not a need
    codes = (pickletools.code2op.get(chr(int(c))) for c in re.findall(r"Unsupported operand (\d+)", message))
    opcodes = [op.name for op in codes if op is not None and op.proto >= 4]
    return sorted(set(found)) or [f"the pickle operation {op}" for op in opcodes]


# ---- .npz files with object arrays ----------------------------------------------------------------------
NPZ_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ArrayUnpickler(pickle.Unpickler):
    """Builds NumPy arrays and scalars; lists, dicts, tuples, strings, numbers and None are pickle's own
    opcodes and need no global. D2-Net's scene info (megadepth_utils/preprocess_scene.py: ``np.savez`` of
    lists of paths or None, of {point id: [x, y]} dicts and of 3×3 / 16-value arrays) needs nothing more."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NPZ_GLOBALS:
            return NPZ_GLOBALS[module, name]
        raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")


def load_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The ``keys`` members of an ``.npz`` file; object arrays through ``ArrayUnpickler``. Raises KeyError
    for a missing member, OSError / ValueError for an unreadable file, ``UnsafeFileError`` for a refused one."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"not an .npz archive: {err}") from err
    with archive:
        names = set(archive.namelist())
        out = {}
        for key in keys:
            if f"{key}.npy" not in names:
                raise KeyError(f"{key} is not a member of {path}")
            with archive.open(f"{key}.npy") as member:
                out[key] = _read_member(member, path)
    return out


def _read_member(member: Any, path: str | os.PathLike) -> np.ndarray:
    version = np.lib.format.read_magic(member)
    header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in header:
        raise ValueError(f"unsupported .npy version {version}")
    if not header[version](member)[2].hasobject:
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)
    try:
        array = ArrayUnpickler(member).load()
    except pickle.UnpicklingError as err:
        needs = re.findall(r"GLOBAL ([\w.]+)", str(err))
        if not needs:
            raise ValueError(f"unreadable object array: {err}") from None
        remedy = "Scene info holds only arrays, lists, dicts, strings and numbers: regenerate the file"
        raise refusal(path, needs, remedy) from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"a member holds a {type(array).__name__}, not an array")
    return array
