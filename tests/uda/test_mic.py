"""Masked Image Consistency (``refign/uda/mic.py``) and its hook in DACS/DAFormer/HRDA, against independent
computations: the mask's statistics and geometry, what the student sees, the labels and weights it is trained
on, the loss by hand (HRDA's multi-resolution loss included), and a step that is unchanged up to MIC."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from refign import build
from refign.data.classes import colorize
from refign.engine.checkpoint import load
from refign.models.segmentor import Segmentor
from refign.refine.pseudo_labeler import RefignPseudoLabeler
from refign.refine.refiner import refine
from refign.train import run
from refign.uda.dacs import DACS
from refign.uda.hrda import HRDA
from refign.uda.mic import MaskedImageConsistency, block_mask
from refign.uda.pseudo_label import confidence_weight
from refign.utils.errors import ConfigError
from refign.utils.imaging import to_rgb_uint8
from tests.refign.test_refign_wiring import ShiftAligner
from tests.uda.conftest import TinyBackbone, TinyHead, engine_step, tiny_segmentor, toy_batch, uda_kwargs
from tests.uda.test_hrda import hrda_model


def make_mic(**overrides) -> MaskedImageConsistency:
    args = dict(block_size=16, ratio=0.7, loss_weight=1.0, images="target", augment=True)
    args |= dict(color_jitter_s=0.2, color_jitter_p=0.2, blur_sigma=(0.15, 1.15), crop_size=(64, 64))
    return MaskedImageConsistency(**(args | overrides))


def record(monkeypatch, obj, name: str) -> list:
    """Wrap ``obj.name`` so that every call's (args, result) is appended to the returned list."""
    calls, original = [], getattr(obj, name)

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(obj, name, spy)
    return calls


def weighted_ce(logits: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """−log softmax at the label, times the weight, averaged over every pixel (written out by hand)."""
    nll = -torch.log_softmax(logits.double(), 1).gather(1, label[:, None])[:, 0]
    return (nll * weight.double()).mean()


def up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_block_mask_ratio_and_alignment(ratio):
    b, block, (h, w) = 200, 8, (64, 128)
    mask = block_mask((b, 3, h, w), block, ratio)
    assert mask.shape == (b, 1, h, w) and set(mask.unique().tolist()) <= {0.0, 1.0}
    tiles = mask.view(b, h // block, block, w // block, block)
    assert torch.equal(tiles.amin((2, 4)), tiles.amax((2, 4)))  # constant on the 8-px grid from (0, 0)
    masked = 1 - tiles[:, :, 0, :, 0]  # one value per block: (B, 8, 16)
    assert abs(masked.mean().item() - ratio) < 0.015  # 25 600 blocks: 3σ ≈ 0.009
    # blocks are drawn independently: two horizontal neighbours differ with probability 2r(1 − r) (also rules
    # out a coarser grid), and every image has its own mask
    differ = (masked[..., 1:] != masked[..., :-1]).float().mean().item()
    assert abs(differ - 2 * ratio * (1 - ratio)) < 0.02
    assert len({m.flatten().tolist().__repr__() for m in masked}) == b


def test_student_sees_zeros_where_masked_and_the_teachers_labels_of_the_unmasked_target(monkeypatch):
    """images=source_and_target, no augmentation (the official Cityscapes → ACDC / Dark Zurich mode): the
    student sees [source₀, target₀] with masked pixels at 0 and the rest untouched; the labels are the source
    label and the teacher's pseudo-label of the *unmasked* target, the weights 1 and the confidence weight."""
    kwargs = uda_kwargs("dacs", teacher_eval_mode=True, pseudo_label_threshold=0.3, psweight_ignore_top=8)
    method = DACS(tiny_segmentor(), **kwargs, mic=make_mic(images="source_and_target", augment=False)).train()
    method.wants_images = True
    teacher_inputs = []
    method.teacher.model.register_forward_pre_hook(lambda module, args: teacher_inputs.append(args[0]))
    losses = record(monkeypatch, method, "segmentation_loss")
    batch = toy_batch()
    out = engine_step(method, batch, step=0)

    (image, label, weight), _ = losses[-1]  # the MIC loss is the step's last
    assert len(losses) == 3 and len(teacher_inputs) == 1
    assert torch.equal(teacher_inputs[0], batch["image_trg"])
    kept = image != 0
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # whole pixels are masked, all channels
    unmasked = torch.stack([batch["image_src"][0], batch["image_trg"][0]])
    assert torch.equal(image[kept], unmasked[kept])
    assert 0.4 < 1 - kept[:, 0].float().mean() < 0.95  # 2 × 16 blocks at ratio 0.7

    with torch.no_grad():  # the teacher again on the unmasked target (dropout off, same BN batch statistics)
        probs = torch.softmax(up(method.teacher.model(batch["image_trg"]), (64, 64)), 1)
    confidence, pseudo = probs.max(1)
    q = (confidence >= 0.3).float().mean()
    assert q > 0 and torch.equal(label, torch.stack([batch["semantic_src"][0], pseudo[0]]))
    expected_weight = torch.stack([torch.ones(64, 64), torch.full((64, 64), q.item())])
    expected_weight[1, :8] = 0
    torch.testing.assert_close(weight, expected_weight)

    # the panel: … | masked target | the label its loss uses
    tiles = np.split(out["img/dacs"], 6, axis=1)
    assert np.array_equal(tiles[4], to_rgb_uint8(image[1])) and np.array_equal(
        tiles[5], colorize(pseudo[0].numpy())
    )


def test_loss_equals_a_hand_computation(monkeypatch):
    mic = make_mic(loss_weight=0.5)
    kwargs = uda_kwargs("daformer", pseudo_label_threshold=0.0, psweight_ignore_top=8)
    method = DACS(tiny_segmentor(), **kwargs, mic=mic).train()
    method.model.head.dropout.p = 0.0  # so that the student can be run again with the same result
    made = record(monkeypatch, mic, "masked_batch")
    out = engine_step(method, toy_batch(), step=0)
    masked = made[0][1]
    assert torch.equal(masked.image, masked.image * masked.mask) and (masked.mask == 0).any()
    assert torch.all(masked.weight[:, :8] == 0) and torch.all(masked.weight[:, 8:] == 1)
    with torch.no_grad():
        logits = method.model.head(method.model.backbone(masked.image))
        expected = 0.5 * weighted_ce(up(logits, (64, 64)), masked.label, masked.weight)
    torch.testing.assert_close(out["loss_mic"].double(), expected)


def test_hrda_trains_the_masked_image_with_its_multi_resolution_loss(monkeypatch):
    """0.9·CE(up(fused), y) + 0.1·CE(detail logits, crop(y)), both weighted, on the masked target."""
    kwargs = uda_kwargs("hrda", crop_size=[64, 64], pseudo_label_threshold=0.0, psweight_ignore_top=20)
    method = HRDA(hrda_model(), **kwargs, mic=make_mic(loss_weight=2.0)).train()
    made = record(monkeypatch, method.mic, "masked_batch")
    passes = record(monkeypatch, method.model, "forward_train")
    out = engine_step(method, toy_batch(), step=0)
    masked = made[0][1]
    (x,), res = passes[-1]
    assert torch.equal(x, masked.image)
    y1, y2, x1, x2 = res.box
    fused = weighted_ce(up(res.fused, (64, 64)), masked.label, masked.weight)
    detail = weighted_ce(res.hr_logits, masked.label[:, y1:y2, x1:x2], masked.weight[:, y1:y2, x1:x2])
    torch.testing.assert_close(out["loss_mic"].double(), 2.0 * (0.9 * fused + 0.1 * detail))


def test_mic_only_adds_its_loss_after_the_rest_of_the_step():
    """Same seed, same weights: every entry of a DAFormer step is bit-identical with and without MIC (its
    draws come last), so mic=off is the method's own step; MIC adds exactly ``loss_mic``."""
    student = tiny_segmentor()
    outs = []
    for mic in (None, make_mic()):
        kwargs = uda_kwargs("daformer", pseudo_label_threshold=0.0)
        method = DACS(copy.deepcopy(student), **kwargs, mic=mic).train()
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        outs.append(engine_step(method, toy_batch(), step=0))
    off, on = outs
    assert set(on) - set(off) == {"loss_mic"} and set(off) <= set(on)
    for key, value in off.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(on[key])), key
    assert torch.isfinite(on["loss_mic"]) and on["loss_mic"] > 0


def test_mic_parameters_set_while_off_do_not_switch_it_on(tiny_cfg, tmp_path):
    """Two training steps of DAFormer with mic=off, and with mic=off plus MIC's parameters set (as a scale or an
    experiment sets them): same losses and bit-identical weights (student, teacher, frozen copy), so only
    ``mic.enabled`` switches MIC; mic=on differs, and its image panel written by the trainer has the two MIC
    tiles (masked image, its pseudo-label)."""
    results = {}
    for name, mic in (
        ("off", ["mic=off"]),
        ("set", ["mic=off", "mic.block_size=4", "mic.ratio=0.3"]),
        ("on", ["mic=on"]),
    ):
        cfg = tiny_cfg("uda=daformer", *mic, "trainer.max_steps=2", "trainer.image_every=2", n_train=4)
        run(cfg, tmp_path / name)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        losses = [{k: v for k, v in json.loads(x).items() if k.startswith("train/loss")} for x in lines]
        results[name] = [x for x in losses if x], load(tmp_path / name / "checkpoints" / "last.pt")["method"]
    (off_losses, off_state), (absent_losses, absent_state) = results["off"], results["set"]
    assert off_losses == absent_losses and len(off_losses) == 2
    assert off_state.keys() == absent_state.keys()
    assert all(torch.equal(off_state[k], absent_state[k]) for k in off_state)
    on_losses, on_state = results["on"]
    assert all("train/loss_mic" in x for x in on_losses)
    assert not all(torch.equal(off_state[k], on_state[k]) for k in off_state)
    for name, tiles in (("off", 4), ("on", 6)):  # 64² crops side by side
        (panel,) = (tmp_path / name / "images").glob("img_dacs_*.png")
        assert np.asarray(Image.open(panel)).shape == (64, tiles * 64, 3), name


def test_with_refign_mic_trains_on_the_refined_pseudo_labels(monkeypatch):
    """refign=on: the labels and weights MIC's loss receives are those of Refign's refined map, recomputed
    here from the teacher's target and (shifted) reference logits, and not the teacher's own labels."""
    labeler = RefignPseudoLabeler(ShiftAligner(3), adapt_to_ref=False)
    kwargs = uda_kwargs("daformer", teacher_eval_mode=True, pseudo_label_threshold=0.3, num_classes=19)
    model = Segmentor(TinyBackbone(), TinyHead(num_classes=19))  # Refign's M reads the Cityscapes classes
    method = DACS(model, **kwargs, pseudo_labeler=labeler, mic=make_mic()).train()
    made = record(monkeypatch, method.mic, "masked_batch")
    batch = toy_batch()
    batch["image_ref"] = batch["image_trg"].roll(-3, -1) * 0.5 + 0.2  # another look at the scene
    engine_step(method, batch, step=0)

    (target, label, weight, *_), _ = made[0]
    with torch.no_grad():  # the teacher after this step's EMA update, in eval mode: deterministic
        logits = up(method.teacher.model(torch.cat([batch["image_trg"], batch["image_ref"]])), (64, 64))
    logits_trg, logits_ref = logits[:2], logits[2:]
    warped = torch.zeros_like(logits_ref)  # ShiftAligner: target pixel x sees the reference at x + 3
    warped[..., :-3] = logits_ref[..., 3:]
    valid = torch.zeros(2, 64, 64, dtype=torch.bool)
    valid[:, 1:-1, : 64 - 3 - 1] = True  # strict interior of the warp (see test_refign_wiring)
    refined = refine(logits_trg, warped, valid, torch.ones(2, 1, 64, 64), gamma=0.25)
    expected_label, expected_weight = confidence_weight(refined, 0.3)
    assert torch.equal(target, batch["image_trg"])
    assert torch.equal(label, expected_label)
    torch.testing.assert_close(weight, expected_weight)
    assert (label != logits_trg.argmax(1)).any()  # refinement changed labels, so the check has teeth


def test_the_switch_and_its_refusals_at_start_up(tiny_cfg, tmp_path):
    assert build.build_method(tiny_cfg("uda=daformer")).mic is None  # mic=off by default
    mic = build.build_method(tiny_cfg("uda=daformer", "mic=on")).mic
    assert isinstance(mic, MaskedImageConsistency)
    assert (mic.block_size, mic.ratio, mic.loss_weight, mic.images, mic.augment) == (
        8,
        0.7,
        1.0,
        "target",
        True,
    )
    # at start-up: the training command stops before its first step, naming the key at fault
    with pytest.raises(ConfigError, match=r"mic=on .* SourceOnly \(uda._target_=.*\) makes none"):
        run(tiny_cfg("uda=source_only", "mic=on"), tmp_path / "a")
    with pytest.raises(
        ValueError, match=r"mic.block_size=24 does not divide .* dataset.crop_size=\[64, 64\]"
    ):
        run(tiny_cfg("uda=daformer", "mic=on", "mic.block_size=24"), tmp_path / "b")
    assert not list(tmp_path.glob("*/metrics.jsonl"))
    with pytest.raises(ValueError, match="mic.images='source'"):
        build.build_method(tiny_cfg("uda=daformer", "mic=on", "mic.images=source"))
