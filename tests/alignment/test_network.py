"""The matcher: official key set and shapes, frozen backbone, outputs, checkpoint and size errors."""

from __future__ import annotations

import pytest
import torch

from refign.alignment.network import (
    AlignmentNetwork,
    build_alignment_network,
    certainty_from_logvar,
    load_alignment_checkpoint,
)
from refign.alignment.uawarpc import num_extra_levels
from refign.alignment.vgg import VGGPyramid
from refign.models.weights import CheckpointError


def cbr(prefix: str, cin: int, cout: int, k: int) -> dict[str, tuple[int, ...]]:
    """The 6 entries of an official ConvBNReLU (no conv bias)."""
    return {
        f"{prefix}.conv.weight": (cout, cin, k, k),
        f"{prefix}.bn.weight": (cout,),
        f"{prefix}.bn.bias": (cout,),
        f"{prefix}.bn.running_mean": (cout,),
        f"{prefix}.bn.running_var": (cout,),
        f"{prefix}.bn.num_batches_tracked": (),
    }


def expected_head_keys() -> dict[str, tuple[int, ...]]:
    """Written from the official head key list (docs/checkpoints.md#matcher-keys), independently of the model code."""
    keys: dict[str, tuple[int, ...]] = {}
    for n, cin in (("4", 256), ("3", 84), ("2", 84), ("1", 86)):
        p = f"decoder{n}"
        for name, a, b, k in (
            ("conv_0", cin, 128, 3),
            ("conv0_skip", 128, 96, 1),
            ("conv_1", 128, 128, 3),
            ("conv_2", 128, 96, 3),
            ("conv2_skip", 96, 32, 1),
            ("conv_3", 96, 64, 3),
            ("conv_4", 64, 32, 3),
        ):
            keys |= cbr(f"{p}.{name}", a, b, k)
        keys |= {f"{p}.predict_mapping.weight": (2, 32, 3, 3), f"{p}.predict_mapping.bias": (2,)}
    for p in ("refinement_module_adaptive", "refinement_module_finest"):
        for i, (a, b) in enumerate(((32, 128), (128, 128), (128, 128), (128, 96), (96, 64), (64, 32))):
            keys |= cbr(f"{p}.dc_convs.{i}", a, b, 3)
        keys |= {f"{p}.dc_convs.6.weight": (2, 32, 3, 3), f"{p}.dc_convs.6.bias": (2,)}
    keys |= {"reduce.weight": (2, 32, 1, 1), "reduce.bias": (2,)}
    for n, fuse_in in (("4", 38), ("3", 41), ("2", 41), ("1", 41)):
        p = f"estimate_uncertainty_components{n}"
        keys |= cbr(f"{p}.conv_0", 1, 32, 3) | cbr(f"{p}.conv_1", 32, 32, 3) | cbr(f"{p}.conv_2", 32, 16, 3)
        keys |= {f"{p}.predict_uncertainty.weight": (6, 16, 3, 3), f"{p}.predict_uncertainty.bias": (6,)}
        keys |= cbr(f"{p}.pred_conv_0", fuse_in, 32, 3) | cbr(f"{p}.pred_conv_1", 32, 16, 3)
        keys |= {
            f"{p}.predict_uncertainty_final.weight": (1, 16, 3, 3),
            f"{p}.predict_uncertainty_final.bias": (1,),
        }
    return keys


@pytest.fixture(scope="module")
def network() -> AlignmentNetwork:
    torch.manual_seed(0)
    return build_alignment_network(force_torch_correlation=True)


def test_head_keys_and_shapes_match_official(network):
    expected = expected_head_keys()
    got = {k: tuple(v.shape) for k, v in network.alignment_head.state_dict().items()}
    assert len(expected) == 390
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert got == expected
    assert sum(p.numel() for p in network.alignment_head.parameters()) == 3_145_034


def test_backbone_keys_match_official(network):
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    keys = {k for k in network.state_dict() if k.startswith("alignment_backbone.")}
    assert keys == {f"alignment_backbone.features.{i}.{p}" for i in convs for p in ("weight", "bias")}


def test_forward_shapes_ranges_and_gradients_only_in_head(network):
    network.train()
    trg, src = torch.randn(1, 3, 32, 48), torch.randn(1, 3, 32, 48)
    flow, cert = network(trg, src)
    assert flow.shape == (1, 2, 32, 48) and cert.shape == (1, 1, 32, 48)
    assert ((cert >= 0) & (cert <= 1)).all()
    (flow.abs().mean() + cert.mean()).backward()
    assert all(p.grad is None for p in network.alignment_backbone.parameters())
    assert all(not p.requires_grad for p in network.alignment_backbone.parameters())
    head_grads = [p.grad for p in network.alignment_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert not network.alignment_backbone.training  # frozen backbone stays in eval mode
    network.zero_grad(set_to_none=True)


def test_levels_units_and_sizes(network):
    network.eval()
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        pyr = network.pyramids(torch.cat([x, x]))
        levels = network.head_levels(
            ([f[:1] for f in pyr[0]], [f[:1] for f in pyr[1]]),
            ([f[1:] for f in pyr[0]], [f[1:] for f in pyr[1]]),
            (48, 80),
        )
    sizes = [tuple(f.shape[-2:]) for f, _ in levels]
    assert sizes == [(16, 16), (32, 32), (6, 10), (12, 20)]
    assert all(lv.shape[1] == 1 for _, lv in levels)


def test_different_sizes_raise(network):
    with pytest.raises(ValueError, match="same shape"):
        network(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 48))


def test_checkpoint_roundtrip_and_missing_head_keys(network, tmp_path):
    path = tmp_path / "uawarpc_megadepth.ckpt"
    torch.save({"state_dict": network.state_dict(), "epoch": 3}, path)  # Lightning layout
    other = build_alignment_network()
    load_alignment_checkpoint(path, other)
    for k, v in network.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v)

    state = {k: v for k, v in network.state_dict().items() if not k.startswith("alignment_head.reduce")}
    state["alignment_head.bogus.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(CheckpointError) as err:
        load_alignment_checkpoint(bad, other)
    msg = str(err.value)
    assert str(bad) in msg and "alignment_head.reduce.weight" in msg and "alignment_head.reduce.bias" in msg
    assert "alignment_head.bogus.weight" in msg
    with pytest.raises(CheckpointError, match="not found"):
        load_alignment_checkpoint(tmp_path / "nope.ckpt", other)


def test_vgg_weights_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth"):
        VGGPyramid(tmp_path / "nope.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, wrong)
    with pytest.raises(CheckpointError, match=r"wrong.pth.*missing.*features.0.bias"):
        VGGPyramid(wrong)
    good = tmp_path / "vgg16.pth"
    reference = VGGPyramid()
    torch.save(reference.state_dict() | {"classifier.0.weight": torch.zeros(2, 2)}, good)
    loaded = VGGPyramid(good)
    torch.testing.assert_close(loaded.features[28].weight, reference.features[28].weight)


def test_certainty_and_iterative_levels():
    logvar = torch.tensor([-10.0, 0.0, 10.0])
    expected = 1 - torch.exp(-1 / (2 * torch.exp(logvar)))
    torch.testing.assert_close(certainty_from_logvar(logvar), expected)
    assert [num_extra_levels(s, s) for s in (480, 1024, 1536, 3072)] == [0, 0, 1, 2]


def test_iterative_refinement_reuses_level2_modules(network, monkeypatch):
    """Force one extra level (normally only for sides > ~1086 px) and check it runs in eval mode only."""
    import refign.alignment.uawarpc as uawarpc

    monkeypatch.setattr(uawarpc, "num_extra_levels", lambda h, w: 1)
    calls = []
    hook = network.alignment_head.decoder2.register_forward_hook(lambda *a: calls.append(1))
    network.alignment_head.iterative_refinement = True
    try:
        network.eval()
        with torch.no_grad():
            flow, cert = network(torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96))
    finally:
        network.alignment_head.iterative_refinement = False
        hook.remove()
    assert flow.shape == (1, 2, 64, 96) and torch.isfinite(flow).all() and torch.isfinite(cert).all()
    assert len(calls) == 2  # the extra level (1/16 resolution) and level 2 share decoder2
