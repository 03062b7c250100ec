"""Checkpoint import on state dicts built here with the official key names and shapes (docs/checkpoints.md#official-import)."""

from __future__ import annotations

import re

import pytest
import torch

from refign import build
from refign.engine import checkpoint
from refign.models.backbones import mit
from refign.models.convert import check_vgg16, convert_mit, convert_refign
from refign.models.weights import CheckpointError
from scripts.convert_checkpoint import main as convert_main
from tests.conftest import compose_cfg

MIT_B0 = dict(
    embed_dims=32, num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1], mlp_ratio=4
)
MODEL = [
    "backbone=mit_b0",
    "head=daformer_small",
    "uda=daformer",
    "refign=off",
    "rcs=off",
    "init_weights=null",
]


def to_segformer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg MiT names → the SegFormer release names (the inverse mapping, written independently)."""
    out = {}
    for key, v in state.items():
        s = re.match(r"layers\.(\d)\.(\d)\.?(.*)", key)
        stage, part, rest = int(s[1]) + 1, int(s[2]), s[3]
        if part == 0:
            out[f"patch_embed{stage}.{rest.replace('projection', 'proj')}"] = v
        elif part == 2:
            out[f"norm{stage}.{rest}"] = v
        else:
            j, sub = rest.split(".", 1)
            base = f"block{stage}.{j}."
            if sub.startswith("attn.attn.in_proj_"):
                kind = sub.rsplit("_", 1)[1]
                c = v.shape[0] // 3
                out[base + f"attn.q.{kind}"], out[base + f"attn.kv.{kind}"] = v[:c], v[c:]
            elif sub.startswith("attn.attn.out_proj."):
                out[base + "attn.proj." + sub.rsplit(".", 1)[1]] = v
            elif sub.startswith("ffn.layers."):
                idx, kind = sub.split(".")[2:]
                name = {"0": "mlp.fc1", "1": "mlp.dwconv.dwconv", "4": "mlp.fc2"}[idx]
                out[base + f"{name}.{kind}"] = v.flatten(1) if idx != "1" and kind == "weight" else v
            else:
                out[base + sub] = v
    return out


def test_segformer_mit_weights_land_in_mmseg_parameters(tmp_path):
    torch.manual_seed(0)
    reference = mit(**MIT_B0, drop_path_rate=0.0).eval()
    official = to_segformer(reference.state_dict())
    assert "block3.1.attn.kv.weight" in official and official["patch_embed1.proj.weight"].shape == (
        32,
        3,
        7,
        7,
    )
    # the Cityscapes SegFormer-B5 file nests the encoder under backbone. next to a decode head
    wrapped = {f"backbone.{k}": v for k, v in official.items()} | {
        "decode_head.linear_pred.weight": torch.zeros(19, 256, 1, 1)
    }
    src, out = tmp_path / "segformer.pth", tmp_path / "mit_mmseg.pth"
    torch.save({"state_dict": wrapped}, src)
    convert_main(["mit", str(src), str(out)])
    loaded = mit(**MIT_B0, drop_path_rate=0.0, pretrained=str(out)).eval()
    for k, v in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(reference(x), loaded(x), strict=True):
            torch.testing.assert_close(a, b)


def test_truncated_or_foreign_mit_file_lists_keys():
    official = to_segformer(mit(**MIT_B0, drop_path_rate=0.0).state_dict())
    del official["block2.1.attn.kv.weight"]
    with pytest.raises(CheckpointError, match=r"block2\.1\.attn\.q\.weight"):
        convert_mit(official, "cut.pth")
    with pytest.raises(CheckpointError, match="conv1.weight"):
        convert_mit({"conv1.weight": torch.zeros(1)}, "resnet.pth")


def official_refign_state(method: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The method's tensors under the official Lightning module's attribute names (MiT in SegFormer names)."""
    sd = method.state_dict()

    def sub(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}

    out = {}
    for official, ours, mit_names in (
        ("backbone.", "model.backbone.", True),
        ("head.", "model.head.", False),
        ("m_backbone.", "teacher.model.backbone.", True),
        ("m_head.", "teacher.model.head.", False),
        ("imnet_backbone.", "imnet_backbone.", True),
    ):
        part = sub(ours)
        out |= {official + k: v for k, v in (to_segformer(part) if mit_names else part).items()}
    out["alignment_head.reduce.weight"] = torch.zeros(2, 32, 1, 1)  # the aligner, absent with refign=off
    return out


def test_official_refign_checkpoint_converts_and_predicts_identically(tmp_path):
    cfg = compose_cfg([*MODEL, f"paths.output_dir={tmp_path}"])
    torch.manual_seed(1)
    original = build.build_method(cfg)
    for p in original.parameters():  # make student, teacher and frozen copy all differ
        p.data.normal_()
    official = official_refign_state(original)
    src = tmp_path / "refign_official.ckpt"
    torch.save({"state_dict": official, "global_step": 40000}, src)
    with pytest.raises(CheckpointError, match=r"alignment_head\.reduce\.weight"):
        convert_main(["refign", str(src), str(tmp_path / "x.pt"), "--", *MODEL])
    out = tmp_path / "converted.pt"
    convert_main(["refign", str(src), str(out), "--drop-unmatched", "--", *MODEL])
    torch.manual_seed(2)
    fresh = build.build_method(cfg)
    checkpoint.restore_method(fresh, checkpoint.load(out), str(out))
    for k, v in original.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    x = torch.randn(1, 3, 64, 64)
    a, b = original.inference_model().eval(), fresh.inference_model().eval()
    with torch.no_grad():
        torch.testing.assert_close(a.predict(x, (64, 64)), b.predict(x, (64, 64)))


def test_refign_checkpoint_of_wrong_model_or_truncated_lists_keys(tmp_path):
    cfg = compose_cfg([*MODEL, f"paths.output_dir={tmp_path}"])
    method = build.build_method(cfg)
    official = official_refign_state(method)
    del official["alignment_head.reduce.weight"]
    cut = {k: v for k, v in official.items() if not k.startswith("m_head.conv_seg")}
    with pytest.raises(CheckpointError, match=r"missing in the file \(2\): teacher\.model\.head\.conv_seg"):
        convert_refign(cut, method.state_dict(), "cut.ckpt")
    wide = compose_cfg([*MODEL, "head=daformer", f"paths.output_dir={tmp_path}"])
    with pytest.raises(CheckpointError, match=r"shape mismatch.*model\.head\.conv_seg\.weight"):
        convert_refign(official, build.build_method(wide).state_dict(), "small_head.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        convert_main(["refign", str(bad), str(tmp_path / "y.pt"), "--", *MODEL])


def test_vgg16_file_is_checked_by_name_and_shape():
    from refign.models.convert import VGG16_CONVS

    state = {}
    for i, (cout, cin) in VGG16_CONVS.items():
        state[f"features.{i}.weight"] = torch.empty(cout, cin, 3, 3)
        state[f"features.{i}.bias"] = torch.empty(cout)
    state["classifier.0.weight"] = torch.empty(1)
    assert len(check_vgg16(state, "vgg16.pth")) == 26
    del state["features.28.bias"]
    state["features.0.weight"] = torch.empty(64, 1, 3, 3)
    with pytest.raises(CheckpointError, match=r"missing \(1\): features\.28\.bias.*features\.0\.weight"):
        check_vgg16(state, "vgg16.pth")
