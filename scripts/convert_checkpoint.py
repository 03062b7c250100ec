"""Import published weights from local files (docs/data.md, docs/checkpoints.md).

    python -m scripts.convert_checkpoint mit pretrained_models/mit_b5.pth pretrained_models/mit_b5_mmseg.pth
    python -m scripts.convert_checkpoint refign refign_daformer_acdc.ckpt outputs/refign_daformer_acdc.pt \
        -- dataset=acdc uda=daformer [refign=…]      # the overrides describe the model the file holds
    python -m scripts.convert_checkpoint vgg pretrained_models/vgg16-397923af.pth   # check VGG-16 [copy]
    python -m scripts.convert_checkpoint clean downloaded.ckpt clean.ckpt --trust-pickle

``mit``: SegFormer's MiT names to mmseg's; ``refign``: an official Refign checkpoint to a refign checkpoint;
``clean``: of a file whose pickle needs other globals, a copy with only tensors, numbers, strings, containers.
Every file is read as refign reads it, without running code, except with --trust-pickle (clean only), which
unpickles SRC in full: that RUNS WHATEVER CODE THE FILE HOLDS. A file that does not fit stops with the
offending keys listed; nothing is overwritten without --force.
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict

from refign import build
from refign.engine import checkpoint
from refign.models.convert import check_vgg16, convert_mit, convert_refign
from refign.models.weights import load_strict, read_state_dict
from refign.task import compose
from refign.utils.safe_load import load_torch


def save(obj: dict, out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise SystemExit(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, out)
    print(f"wrote {out}")


def refign_checkpoint(src: Path, overrides: list[str], drop_unmatched: bool) -> dict:
    """Build the method the overrides describe, map the official tensors onto it, return a checkpoint."""
    cfg = compose("train", overrides)
    with open_dict(cfg):
        cfg.backbone.pretrained = None  # every tensor comes from the converted file
    method = build.build_method(cfg)
    own = method.state_dict()
    # Refign's frozen aligner is not part of the method's state (it is rebuilt from alignment.checkpoint), but
    # the official file holds it: map it too, so that a file of another matcher is caught here
    labeler = getattr(method, "pseudo_labeler", None)
    aligner = getattr(labeler, "aligner", None)
    rebuilt = {f"pseudo_labeler.aligner.{k}": v for k, v in aligner.state_dict().items()} if aligner else {}
    conversion = convert_refign(read_state_dict(src), own | rebuilt, str(src), drop_unmatched)
    print(conversion.report())
    load_strict(method, {k: v for k, v in conversion.state.items() if k in own}, str(src))
    entries = checkpoint.method_entries(method)
    return {**entries, "config": OmegaConf.to_container(cfg), "converted_from": str(src)}


def plain_copy(obj: Any, where: str, dropped: list[str]) -> Any:
    """``obj`` with only what ``torch.load(weights_only=True)`` reads without an allow-list: tensors (NumPy
    arrays become tensors), numbers, strings, None, and dicts / lists / tuples of them. Anything else is left
    out (None in a list or tuple, to keep the positions) and named in ``dropped``."""
    if obj is None or isinstance(obj, torch.Tensor | str | int | float):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        return torch.from_numpy(obj.copy())
    if isinstance(obj, Mapping):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            copy = plain_copy(value, f"{where}.{key}", dropped)
            if copy is not None or value is None:
                out[key] = copy
        if isinstance(obj, OrderedDict) and isinstance(getattr(obj, "_metadata", None), dict):
            out._metadata = plain_copy(obj._metadata, f"{where}._metadata", dropped)  # state-dict versions
        return out
    if isinstance(obj, list | tuple | np.ndarray):
        items = [plain_copy(v, f"{where}[{i}]", dropped) for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    dropped.append(f"{where} ({type(obj).__module__}.{type(obj).__qualname__})")
    return None


def clean_copy(src: Path, trust_pickle: bool) -> dict:
    """A copy of ``src`` that loads without an allow-list. ``trust_pickle`` unpickles ``src`` in full."""
    if trust_pickle:
        print(f"--trust-pickle: unpickling {src} in full, which runs any code it holds", file=sys.stderr)
        obj = torch.load(src, map_location="cpu", weights_only=False)
    else:
        obj = load_torch(src)
    dropped: list[str] = []
    copy = plain_copy(obj, "", dropped)
    for entry in dropped:
        print(f"left out: {entry.lstrip('.')}")
    if not isinstance(copy, dict):
        raise SystemExit(f"{src} holds a {type(obj).__name__}, not a dict of weights")
    return copy


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["mit", "refign", "vgg", "clean"])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path, nargs="?")
    p.add_argument("--drop-unmatched", action="store_true", help="drop official keys the model cannot hold")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="clean only: unpickle SRC in full, RUNNING ANY CODE IT HOLDS; only for a file you inspected",
    )
    args, overrides = p.parse_known_args(argv)
    overrides = [o for o in overrides if o != "--"]
    if args.kind != "vgg" and args.out is None:
        p.error(f"{args.kind} needs an output path")
    if args.trust_pickle and args.kind != "clean":
        p.error("--trust-pickle applies to 'clean' only: convert the clean copy afterwards")
    if args.kind == "mit":
        save(convert_mit(read_state_dict(args.src), str(args.src)), args.out, args.force)
    elif args.kind == "refign":
        save(refign_checkpoint(args.src, overrides, args.drop_unmatched), args.out, args.force)
    elif args.kind == "clean":
        save(clean_copy(args.src, args.trust_pickle), args.out, args.force)
        load_torch(args.out)  # the copy reads as refign reads files
    else:
        features = check_vgg16(read_state_dict(args.src), str(args.src))
        print(f"{args.src}: VGG-16 with all 13 conv layers ({len(features)} tensors)")
        if args.out:
            save(features, args.out, args.force)


if __name__ == "__main__":
    main()
