import copy

import torch

from refign.uda.dacs import DACS
from refign.uda.pseudo_label import PseudoLabels
from scripts.measure.common import random_batch, seeded_method
from scripts.measure.official_step import compose, project_side
from tests.uda.conftest import engine_step, tiny_segmentor, toy_batch, uda_kwargs


def test_step_returns_finite_losses_and_logs():
    method = DACS(tiny_segmentor(), **uda_kwargs("daformer")).train()
    method.wants_images = True
    out = engine_step(method, toy_batch(), step=0)
    assert out.pop("img/dacs").shape == (64, 4 * 64, 3)
    assert {"loss_src", "loss_mix", "loss_fdist"} <= out.keys()
    for k, v in out.items():
        assert torch.isfinite(torch.as_tensor(v)).all(), k
    # the teacher equals the student after the step-0 update
    for t, s in zip(method.teacher.model.parameters(), method.model.parameters(), strict=True):
        torch.testing.assert_close(t, s)
    assert all(p.grad is not None for p in method.model.parameters())
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is None for p in method.imnet_backbone.parameters())
    assert not method.imnet_backbone.training


def test_loss_falls_on_a_fixed_batch():
    method = DACS(tiny_segmentor(), **uda_kwargs("dacs")).train()
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    batch = toy_batch()
    losses = []
    for step in range(30):
        opt.zero_grad()
        out = engine_step(method, batch, step)
        opt.step()
        losses.append(float(out["loss_src"].detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_injected_pseudo_labeler_and_eval_teacher():
    calls = []

    def labeler(teacher, batch, want_panel=False):
        calls.append(teacher)
        images = batch["image_ref"]
        probs = torch.zeros(images.shape[0], 5, *images.shape[-2:])
        probs[:, 2] = 1
        return PseudoLabels(images, probs)

    method = DACS(tiny_segmentor(), **uda_kwargs("dacs", eval_teacher=True), pseudo_labeler=labeler)
    batch = toy_batch()
    mixed = method.mixed_batch(batch)
    assert calls == [method.teacher.model]
    assert torch.equal(mixed.target, batch["image_ref"]) and torch.all(mixed.pseudo_label == 2)
    assert mixed.confident_fraction == 1 and torch.all(mixed.weight == 1)
    assert set(torch.unique(mixed.label).tolist()) <= {0, 1, 2, 3, 4}
    assert method.inference_model() is method.teacher.model


def test_fdist_without_thing_cells_counts_instead_of_nan():
    method = DACS(tiny_segmentor(), **uda_kwargs("daformer", fdist_classes=[4])).train()
    batch = toy_batch()
    batch["semantic_src"][batch["semantic_src"] == 4] = 0
    out = engine_step(method, batch, step=0)
    assert out["loss_fdist"].item() == 0 and out["fdist_empty_steps"] == 1


def test_a_skipped_step_leaves_the_method_as_it_was():
    """Issue 26's guarantee on the real method and step (synthetic DAFormer): a non-finite source loss skips
    the step, and its EMA teacher update and BatchNorm statistics are undone with the update — the whole
    state, student, teacher and counters, equals the state before the step."""
    cfg = compose("daformer")
    method = seeded_method(cfg)
    step = project_side(cfg, method)
    batch = random_batch(cfg, torch.Generator().manual_seed(0))
    step(batch, 0)
    before = copy.deepcopy(method.state_dict())
    batch["image_src"][0, 0, 0, 0] = float("nan")
    step(batch, 1)  # α > 0: an EMA update that a kept step would make
    after = method.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert any("running_mean" in k for k in before)  # BatchNorm statistics are among them
