"""The CPU-scale matcher variant: configurable coarse branch and width, the patch pyramid with learnt
projections, its checkpoints, and the evaluation figures it is judged by."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from refign.alignment.blocks import UncertaintyModule
from refign.alignment.evaluate import certain_half_epe_ratio, evaluate
from refign.alignment.network import build_alignment_network, load_alignment_checkpoint
from refign.alignment.pyramid import PatchPyramid
from refign.models.weights import CheckpointError


def small_network(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    args = dict(
        pyramid=PatchPyramid(patch_size=3), coarse_size=64, head_width=0.5, force_torch_correlation=True
    )
    return build_alignment_network(**(args | kw))


def test_small_global_patch_is_the_9x9_path_on_a_zero_padded_patch():
    torch.manual_seed(0)
    small, full = UncertaintyModule(4, feed_in_previous=False), UncertaintyModule(9, feed_in_previous=False)
    full.load_state_dict(small.state_dict())
    small.eval(), full.eval()
    corr, feat = torch.rand(2, 16, 3, 5), torch.randn(2, 32, 3, 5)
    # a 4×4 patch placed in the middle of a 9×9 one (rows/cols 2..5), zeros elsewhere, k = y·P + x
    padded = F.pad(corr.view(2, 4, 4, 3, 5), (0, 0, 0, 0, 2, 3, 2, 3)).reshape(2, 81, 3, 5)
    torch.testing.assert_close(small(corr, feat), full(padded, feat))
    with pytest.raises(ValueError, match="search_size"):
        UncertaintyModule(12, feed_in_previous=False)


def test_coarse_size_sets_the_coarse_grids_and_width_keeps_the_official_keys():
    official = build_alignment_network(force_torch_correlation=True).alignment_head.state_dict()
    net = small_network(coarse_size=128)
    head = net.alignment_head.state_dict()
    assert set(head) == set(official)  # same names: a released checkpoint's layout, other shapes
    assert head["decoder4.conv_0.conv.weight"].shape == (64, 64, 3, 3)  # (coarse/16)² = 64 inputs, 128·½ out
    assert head["decoder1.predict_mapping.weight"].shape == (2, 16, 3, 3)
    net.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        pyr = net.pyramids(x)
        levels = net.head_levels(pyr, pyr, (64, 96))
    assert [tuple(f.shape[-2:]) for f, _ in levels] == [(8, 8), (16, 16), (8, 12), (16, 24)]
    with pytest.raises(ValueError, match="coarse_size"):
        small_network(coarse_size=200)


def test_pyramid_strides_and_patch_descriptors_start_as_plain_patches():
    pyramid = PatchPyramid(patch_size=3)
    image = torch.randn(1, 3, 32, 48)
    outs = pyramid(image, [0, 1, 2])
    assert [tuple(o.shape) for o in outs] == [(1, 27, 8, 12), (1, 27, 4, 6), (1, 27, 2, 3)]
    pooled = F.avg_pool2d(image, 8)
    hood = pooled[0, :, 0:3, 1:4].reshape(3, 9)  # the 3×3 neighbourhood of cell (1, 2), channel-major
    expected = (hood - hood.mean(1, keepdim=True)).reshape(27)
    torch.testing.assert_close(outs[1][0, :, 1, 2], expected)  # identity projection at the start
    assert pyramid(image, [-1])[0].shape == (1, 27, 2, 3)
    fixed = PatchPyramid(patch_size=5, learn_projection=False)
    assert not fixed.trainable and not any(p.requires_grad for p in fixed.parameters())
    assert fixed(image, [0])[0].shape == (1, 75, 8, 12)
    with pytest.raises(ValueError, match="odd"):
        PatchPyramid(patch_size=4)


def test_trainable_pyramid_learns_with_the_head_and_is_frozen_inside_refign():
    net = small_network().train()
    assert net.alignment_backbone.training
    x = torch.randn(2, 3, 64, 64)
    flow, cert = net(x, x.roll(2, -1))
    (flow.abs().mean() + cert.mean()).backward()
    grads = [p.grad for p in net.alignment_backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    frozen = small_network().eval().requires_grad_(False)  # how RefignPseudoLabeler holds it
    with torch.no_grad():
        frozen(x, x)
    assert all(p.grad is None for p in frozen.parameters())


def test_trained_pyramid_is_required_in_the_checkpoint(tmp_path):
    net = small_network()
    full, head_only = tmp_path / "full.pt", tmp_path / "head_only.pt"
    torch.save(net.state_dict(), full)
    torch.save({k: v for k, v in net.state_dict().items() if k.startswith("alignment_head.")}, head_only)
    other = small_network()
    torch.manual_seed(1)
    torch.nn.init.normal_(other.alignment_backbone.projections[1].weight)
    load_alignment_checkpoint(full, other)
    torch.testing.assert_close(
        other.alignment_backbone.projections[1].weight, net.alignment_backbone.projections[1].weight
    )
    with pytest.raises(CheckpointError, match=r"alignment_backbone\.\*.*missing"):
        load_alignment_checkpoint(head_only, small_network())


def test_certain_half_ratio_against_a_hand_computation():
    certainty = torch.tensor([0.9, 0.1, 0.8, 0.2])
    epe = torch.tensor([1.0, 9.0, 3.0, 7.0])
    assert certain_half_epe_ratio(certainty, epe) == pytest.approx(((1 + 3) / 2) / 5.0)
    assert certain_half_epe_ratio(torch.ones(4), epe) == pytest.approx(1.0, abs=0.5)


class ShiftedPairs(torch.utils.data.Dataset):
    """Pairs whose reference is the target shifted by 2 px, with dense ground truth and a condition."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        img = F.avg_pool2d(torch.randn(1, 3, 36, 68, generator=g), 3, 1)[0]
        flow = torch.zeros(2, 32, 64)
        flow[0] = 2.0
        valid = torch.zeros(32, 64, dtype=torch.bool)
        valid[4:-4, 4:-4] = True
        return {
            "image": img[:, 1:33, 1:65],
            "image_ref": img[:, 1:33, 3:67],
            "flow": flow,
            "flow_valid": valid,
            "condition": ("night", "fog")[i % 2],
        }


def test_evaluation_reports_every_condition_and_the_certainty_figures():
    metrics = evaluate(small_network(), ShiftedPairs(), torch.device("cpu"), progress=False)
    for cond in ("night", "fog"):
        assert {f"{cond}/pck5", f"{cond}/aepe"} <= set(metrics)
    # two pairs per condition with the same number of valid pixels: overall PCK is their mean
    assert metrics["pck5"] == pytest.approx((metrics["night/pck5"] + metrics["fog/pck5"]) / 2)
    assert {"certain50_epe_ratio", "spearman_cert_epe"} <= set(metrics)
