"""Importing published weights: SegFormer-release MiT files and official Refign Lightning checkpoints.

* MiT weights in the SegFormer release naming (``patch_embed1.proj``, ``block1.0.attn.q``/``kv``, …, also
  the Cityscapes SegFormer-B5 with ``backbone.``/``decode_head.`` keys) become mmseg 1.x ``MixVisionTransformer``
  names with mmseg's own converter (``tools/model_converters/mit2mmseg.py``, shipped in the installed
  package), so the mapping is not written twice.
* An official Refign checkpoint's prefixes (docs/checkpoints.md#official-import) map onto this project's method through ``PREFIXES``;
  backbones in SegFormer naming go through the MiT converter, the rest keeps its sub-keys (the heads use the
  official names here).
* The torchvision VGG-16 file of the aligner is only checked (names and shapes, docs/checkpoints.md#matcher-keys).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from refign.models.weights import CheckpointError

MIT_CONVERTER = Path(".mim", "tools", "model_converters", "mit2mmseg.py")
SEGFORMER_MIT_KEYS = ("patch_embed", "block", "norm")

# official prefix → this project's prefix. The aligner names are those of the alignment engineer's
# module as far as known; keys whose target the model does not have are reported as unmatched.
PREFIXES: dict[str, str] = {
    "backbone.": "model.backbone.",
    "head.": "model.head.",
    "hrda_scale_attention.": "model.scale_attention.",
    "m_backbone.": "teacher.model.backbone.",
    "m_head.": "teacher.model.head.",
    "m_hrda_scale_attention.": "teacher.model.scale_attention.",
    "imnet_backbone.": "imnet_backbone.",
    "alignment_backbone.": "pseudo_labeler.aligner.alignment_backbone.",
    "alignment_head.": "pseudo_labeler.aligner.alignment_head.",
}
BACKBONE_PREFIXES = ("backbone.", "m_backbone.", "imnet_backbone.")
# state of this project that the official checkpoints do not have: taken from the freshly built model
PROJECT_ONLY = ("fdist_empty_steps",)

VGG16_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256)}
VGG16_CONVS |= {14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512)}
VGG16_CONVS |= {24: (512, 512), 26: (512, 512), 28: (512, 512)}


def show(keys: list[str], n: int = 12) -> str:
    return ", ".join(keys[:n]) + (f" … (+{len(keys) - n} more)" if len(keys) > n else "")


def mmseg_mit_converter() -> Callable[[dict], dict]:
    """``convert_mit`` from the installed mmsegmentation's model converters."""
    import mmseg

    path = Path(mmseg.__file__).parent / MIT_CONVERTER
    if not path.is_file():
        raise CheckpointError(f"mmsegmentation's MiT converter is missing: {path} (reinstall mmsegmentation)")
    spec = importlib.util.spec_from_file_location("refign_mit2mmseg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.convert_mit


def is_segformer_mit(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("patch_embed1.", "block1.")) for k in state)


def convert_mit(state: dict[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """SegFormer-release MiT weights → mmseg names; ``backbone.`` is stripped and decode heads dropped."""
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    state = {k: v for k, v in state.items() if not k.startswith(("head.", "decode_head."))}
    if not is_segformer_mit(state):
        raise CheckpointError(
            f"{source} is not a MiT checkpoint in SegFormer naming; keys: {show(sorted(state))}"
        )
    foreign = sorted(k for k in state if not k.startswith(SEGFORMER_MIT_KEYS))
    if foreign:
        raise CheckpointError(f"{source}: keys that are not MiT weights: {show(foreign)}")
    kv_missing = sorted(k for k in state if ".attn.q." in k and k.replace(".q.", ".kv.") not in state)
    if kv_missing:
        raise CheckpointError(
            f"{source}: attention q without its kv weights (truncated file?): {show(kv_missing)}"
        )
    return dict(mmseg_mit_converter()(state))


@dataclass
class Conversion:
    """A converted state dict and the report of what did not map."""

    state: dict[str, torch.Tensor]
    unmatched: list[str] = field(default_factory=list)  # official keys with no target in the model
    filled: list[str] = field(default_factory=list)  # model state absent from the file, kept as built

    def report(self) -> str:
        lines = [f"converted {len(self.state)} tensors"]
        if self.unmatched:
            lines.append(
                f"dropped {len(self.unmatched)} official keys the model has no place for: {show(self.unmatched)}"
            )
        if self.filled:
            lines.append(
                f"kept {len(self.filled)} entries of the built model (not in the file): {show(self.filled)}"
            )
        return "\n".join(lines)


def rename_official(
    state: dict[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Official Refign keys → project keys by ``PREFIXES``: the renamed dict, each new key's official
    group (for reports), and the keys under no known prefix."""
    out, origin, unknown = {}, {}, []
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            groups.setdefault(prefix, {})[key[len(prefix) :]] = value
    for prefix, sub in groups.items():
        if prefix in BACKBONE_PREFIXES and is_segformer_mit(sub):
            sub = convert_mit(sub, f"{source} [{prefix}*]")
        out.update({PREFIXES[prefix] + k: v for k, v in sub.items()})
        origin.update({PREFIXES[prefix] + k: prefix + k for k in sub})
    return out, origin, sorted(unknown)


def convert_refign(
    state: dict[str, torch.Tensor],
    model_state: dict[str, torch.Tensor],
    source: str,
    drop_unmatched: bool = False,
) -> Conversion:
    """Map an official Refign state dict onto ``model_state`` (the built method's ``state_dict()``).

    Missing or mis-shaped tensors are errors naming the keys; official keys the model has no place for
    (e.g. the aligner when Refign is off) are errors too unless ``drop_unmatched``.
    """
    renamed, origin, unknown = rename_official(state, source)
    unmatched = sorted(unknown + [origin[k] for k in renamed if k not in model_state])
    missing = sorted(k for k in model_state if k not in renamed and not k.endswith(PROJECT_ONLY))
    shapes = sorted(
        f"{k} {tuple(renamed[k].shape)}≠{tuple(v.shape)}"
        for k, v in model_state.items()
        if k in renamed and renamed[k].shape != v.shape
    )
    problems = [
        f"{what} ({len(keys)}): {show(keys)}"
        for what, keys in (("missing in the file", missing), ("shape mismatch (file≠model)", shapes))
        if keys
    ]
    if unmatched and not drop_unmatched:
        problems.append(f"no place in the model ({len(unmatched)}): {show(unmatched)} (use --drop-unmatched)")
    if problems:
        raise CheckpointError(f"{source} does not fit the configured model: " + "; ".join(problems))
    filled = sorted(k for k in model_state if k not in renamed)
    merged = {k: renamed.get(k, model_state[k]) for k in model_state}
    return Conversion(merged, unmatched, filled)


def check_vgg16(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The 13 conv layers of a torchvision VGG-16 file (``classifier.*`` dropped), checked by name and shape."""
    expected = {}
    for i, (cout, cin) in VGG16_CONVS.items():
        expected[f"features.{i}.weight"] = (cout, cin, 3, 3)
        expected[f"features.{i}.bias"] = (cout,)
    features = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing = sorted(set(expected) - set(features))
    unexpected = sorted(set(features) - set(expected))
    shapes = sorted(
        f"{k} {tuple(features[k].shape)}≠{expected[k]}"
        for k in set(expected) & set(features)
        if tuple(features[k].shape) != expected[k]
    )
    problems = [
        f"{what} ({len(keys)}): {show(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} is not a torchvision VGG-16 state dict: " + "; ".join(problems))
    return features
