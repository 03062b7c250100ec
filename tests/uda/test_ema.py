import pytest
import torch

from refign.uda.ema import EMATeacher, ema_momentum
from tests.uda.conftest import tiny_segmentor


@pytest.mark.parametrize("step,alpha", [(0, 0.0), (1, 0.5), (3, 0.75), (999, 0.999), (5000, 0.999)])
def test_momentum_ramp(step, alpha):
    assert ema_momentum(step, 0.999) == pytest.approx(alpha)


def test_update_averages_parameters_only():
    student = tiny_segmentor()
    teacher = EMATeacher(student, momentum=0.999)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = [p.clone() for p in teacher.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.backbone.stem[1].running_mean.fill_(3.0)
    alpha = teacher.update(student, step=3)
    assert alpha == pytest.approx(0.75)
    for t0, t1, s in zip(before, teacher.model.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t1, 0.75 * t0 + 0.25 * s)
    # BN statistics are the teacher's own (docs/quirks.md#q2)
    assert torch.all(teacher.model.backbone.stem[1].running_mean == 0)


def test_step_zero_copies_student():
    student = tiny_segmentor()
    teacher = EMATeacher(student, momentum=0.999)
    with torch.no_grad():
        for p in student.parameters():
            p.mul_(2)
    teacher.update(student, step=0)
    for t, s in zip(teacher.model.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, s)


@pytest.mark.parametrize("eval_mode", [False, True])
def test_teacher_dropout_mode(eval_mode):
    teacher = EMATeacher(tiny_segmentor(), momentum=0.999, eval_mode=eval_mode)
    teacher.train()
    assert teacher.model.head.dropout.training is not eval_mode  # official (Q1): dropout stays active
    assert teacher.model.backbone.stem[1].training  # BN keeps batch statistics either way


def test_the_averaged_teacher_is_the_update_bit_for_bit_and_the_stored_one_comes_back():
    student = tiny_segmentor()
    teacher = EMATeacher(student, momentum=0.999)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    stored = [p.clone() for p in teacher.model.parameters()]
    with teacher.averaged(student, step=3) as alpha:
        inside = [p.clone() for p in teacher.model.parameters()]
    assert alpha == 0.75
    assert all(torch.equal(p, s) for p, s in zip(teacher.model.parameters(), stored, strict=True))
    teacher.update(student, step=3, skipped=torch.ones(()))  # a skipped step leaves the teacher as it was
    assert all(torch.equal(p, s) for p, s in zip(teacher.model.parameters(), stored, strict=True))
    teacher.update(student, step=3, skipped=torch.zeros(()))
    assert all(torch.equal(p, i) for p, i in zip(teacher.model.parameters(), inside, strict=True))
