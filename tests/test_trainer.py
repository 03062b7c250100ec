"""The engine on its own (detectron2's tests/test_engine.py): the real ``Trainer`` runs a toy method whose
every number can be computed by hand, so the loss contract (one backward per delivered loss), the skipped
non-finite step, the cadences and resuming are checked without a segmentation model or a dataset."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from refign.engine import checkpoint
from refign.engine.dist import DistInfo
from refign.engine.loggers import MetricLogger
from refign.engine.step import TrainStep
from refign.engine.trainer import NonFiniteLossError, Trainer, TrainerConfig
from refign.task import CONF_DIR

LR = 0.1
CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class Toy(nn.Module):
    """``y = w · x``: losses ``a = y`` (its graph kept for ``b``) and ``b = 2 y``, back-propagated one after
    the other (the gradient is ``3 x``), and ``y_doubled``, a scalar that is only logged. ``nan_steps``: steps
    where ``a`` is NaN."""

    loss_names = ("a", "b")

    def __init__(self, nan_steps: set[int] | None = None) -> None:
        super().__init__()
        self.net = nn.Linear(2, 1, bias=False)
        nn.init.constant_(self.net.weight, 1.0)
        self.nan_steps = nan_steps or set()

    def forward(self, batch: dict[str, torch.Tensor], step: int, backward) -> dict[str, torch.Tensor]:
        y = self.net(batch["x"]).sum()
        backward("a", y * math.nan if step in self.nan_steps else y, retain_graph=True)
        backward("b", 2 * y)
        return {"y_doubled": 2 * y.detach()}

    def inference_model(self) -> nn.Module:
        return self.net


def inputs(step: int) -> dict[str, torch.Tensor]:
    """A different input every step, so that resuming at the wrong step or order shows in the weights."""
    return {"x": torch.tensor([[1.0 + step, -0.5 * step]])}


def make_step(method: nn.Module, dist_info: DistInfo = CPU) -> TrainStep:
    """The toy's step: SGD with momentum (state that must resume) at a constant learning rate."""
    optimizer = torch.optim.SGD(method.parameters(), lr=LR, momentum=0.9)
    return TrainStep(
        method, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1.0), dist_info
    )


def settings(**cfg) -> TrainerConfig:
    """``conf/trainer/default.yaml`` (the one home of the defaults) with the toy's steps and cadences."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "trainer" / "default.yaml"))
    toy = {"max_steps": 4, "log_every": 1, "eval_every": 0, "checkpoint_every": 0, "num_workers": 0}
    return TrainerConfig(**{**defaults, **toy, **cfg})


def make_trainer(
    run_dir: Path, method: Toy, evaluations: list[int] | None = None, dist_info: DistInfo = CPU, **cfg
) -> Trainer:
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(
        settings(**cfg),
        make_step(method, dist_info),
        batches=lambda start: (inputs(step) for step in itertools.count(start)),
        evaluate=None if evaluations is None else record_evaluation(evaluations),
        dist_info=dist_info,
        run_dir=run_dir,
        logger=MetricLogger(run_dir, enabled=True),
    )


def record_evaluation(evaluations: list[int]):
    def evaluate(model: nn.Module, autocast) -> tuple[dict, dict[str, float]]:
        evaluations.append(len(evaluations))
        value = float(model.weight.detach().sum())
        return {"toy": {"mIoU": value}}, {"val/w_sum": value}

    return evaluate


def logged(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def hand_sgd(steps: list[int], skipped: set[int] = frozenset()) -> torch.Tensor:
    """SGD with momentum 0.9 on the gradient 3 x of ``a`` and ``b``, the skipped steps left out."""
    w, velocity = torch.ones(1, 2), None
    for step in steps:
        if step in skipped:
            continue
        grad = 3 * inputs(step)["x"]
        velocity = grad if velocity is None else 0.9 * velocity + grad
        w = w - LR * velocity
    return w


def test_the_step_back_propagates_each_delivered_loss_and_only_logs_the_rest(tmp_path):
    trainer = make_trainer(tmp_path, Toy(), max_steps=3)
    trainer.fit()
    trainer.close()
    assert torch.allclose(trainer.train_step.method.net.weight.detach(), hand_sgd([0, 1, 2]), atol=1e-6)
    lines = [x for x in logged(tmp_path) if "train/loss" in x]
    assert [x["step"] for x in lines] == [1, 2, 3]
    for x in lines:  # the logged total is the sum of the delivered losses; y_doubled is logged, not summed
        assert x["train/loss"] == pytest.approx(x["train/loss_a"] + x["train/loss_b"], rel=1e-6)
        assert x["train/y_doubled"] == pytest.approx(x["train/loss_b"], rel=1e-6)


def test_a_non_finite_step_is_skipped_and_a_streak_stops_the_run(tmp_path):
    trainer = make_trainer(tmp_path / "one", Toy(nan_steps={1}), max_steps=4, log_every=2)
    trainer.fit()
    trainer.close()
    assert torch.allclose(
        trainer.train_step.method.net.weight.detach(), hand_sgd([0, 1, 2, 3], skipped={1}), atol=1e-6
    )
    assert trainer.step == 4  # a lone bad step does not stop the run

    streak = make_trainer(tmp_path / "streak", Toy(nan_steps={2, 3, 4}), max_steps=10, max_nonfinite_steps=3)
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite losses or gradients by step 5"):
        streak.fit()
    streak.close()
    # no good checkpoint was written before the streak; the diverged state has a file of its own
    assert not (tmp_path / "streak" / "checkpoints" / checkpoint.LAST).exists()
    diverged = checkpoint.load(tmp_path / "streak" / "checkpoints" / "diverged_0000005.pt")
    assert diverged["step"] == 5 and torch.allclose(
        diverged["segmentor"]["weight"], hand_sgd([0, 1]), atol=1e-6
    )


class InfGrad(torch.autograd.Function):
    """Identity forward, an infinite gradient backward: a finite loss whose backward overflows."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


class Counting(Toy):
    """The toy with BatchNorm statistics and a counter that every forward pass changes (as an EMA teacher's
    update does), and an overflowing backward on ``inf_grad_steps``."""

    def __init__(self, nan_steps=None, inf_grad_steps=()) -> None:
        super().__init__(nan_steps)
        self.norm = nn.BatchNorm1d(2)
        self.register_buffer("passes", torch.zeros(()))
        self.inf_grad_steps = set(inf_grad_steps)

    def forward(self, batch, step, backward):
        self.passes += 1
        self.norm(torch.cat([batch["x"], 2 * batch["x"]]))  # moves the running statistics
        if step in self.inf_grad_steps:
            deliver = backward

            def backward(name, loss, **kwargs):
                deliver(name, InfGrad.apply(loss) if name == "b" else loss, **kwargs)

        return super().forward(batch, step, backward)


def test_a_step_with_finite_loss_but_non_finite_gradients_is_skipped_and_leaves_no_trace(tmp_path):
    """The guard checks the gradients as a loss scaler does, and a skipped step's BatchNorm statistics and
    forward-pass counters are restored: the run equals one that never saw step 1."""
    bad = make_trainer(tmp_path / "bad", Counting(inf_grad_steps={1}), max_steps=3, log_every=3)
    bad.fit()
    bad.close()
    assert torch.allclose(
        bad.train_step.method.net.weight.detach(), hand_sgd([0, 1, 2], skipped={1}), atol=1e-6
    )
    assert float(bad.train_step.method.passes) == 2  # the skipped step's pass is undone
    expected = Counting()  # the statistics of steps 0 and 2 only
    for step in (0, 2):
        expected.norm(torch.cat([inputs(step)["x"], 2 * inputs(step)["x"]]))
    torch.testing.assert_close(
        bad.train_step.method.norm.running_mean, expected.norm.running_mean, rtol=0, atol=0
    )
    torch.testing.assert_close(
        bad.train_step.method.norm.running_var, expected.norm.running_var, rtol=0, atol=0
    )
    assert [x["train/loss"] for x in logged(tmp_path / "bad") if "train/loss" in x]  # logged as usual


def test_the_last_step_is_saved_once(tmp_path, monkeypatch):
    saved: list[int] = []
    real_save = Trainer.save

    def counting_save(self):
        saved.append(self.step)
        real_save(self)

    monkeypatch.setattr(Trainer, "save", counting_save)
    trainer = make_trainer(tmp_path, Toy(), max_steps=4, checkpoint_every=2)
    trainer.fit()
    trainer.close()
    assert saved == [2, 4]


def test_logging_checkpoint_and_evaluation_follow_their_cadences(tmp_path, monkeypatch):
    saved: list[int] = []
    evaluations: list[int] = []
    trainer = make_trainer(
        tmp_path, Toy(), evaluations, max_steps=7, log_every=3, checkpoint_every=2, eval_every=4
    )
    monkeypatch.setattr(Trainer, "save", lambda self: saved.append(self.step))
    results = trainer.fit()
    trainer.close()
    lines = logged(tmp_path)
    assert [x["step"] for x in lines if "train/loss" in x] == [3, 6, 7]  # every 3 steps and at the end
    assert [x["step"] for x in lines if "val/w_sum" in x] == [4, 7]  # every 4 steps and at the end
    assert saved == [2, 4, 6, 7]  # every 2 steps and at the end
    assert len(evaluations) == 2 and results["toy"]["mIoU"] == pytest.approx(float(hand_sgd(range(7)).sum()))


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path):
    straight = make_trainer(tmp_path / "straight", Toy(), max_steps=6)
    straight.fit()
    straight.close()

    first = make_trainer(tmp_path / "resumed", Toy(), max_steps=3)
    first.fit()
    first.close()
    second = make_trainer(tmp_path / "resumed", Toy(), max_steps=6)
    path = tmp_path / "resumed" / "checkpoints" / checkpoint.LAST
    second.restore(checkpoint.load(path), path)
    assert second.step == 3
    second.fit()
    second.close()
    assert torch.equal(second.train_step.method.net.weight, straight.train_step.method.net.weight)
    assert torch.allclose(second.train_step.method.net.weight.detach(), hand_sgd(list(range(6))), atol=1e-6)


def test_best_is_the_checkpoint_with_the_highest_target_miou(tmp_path):
    """``best.pt`` follows the target mIoU of the evaluations at checkpoint steps, and outlives the rotation
    of the step files (``keep_checkpoints``)."""
    scores = iter([5.0, 9.0, 7.0, 1.0])

    def evaluate(model, autocast):
        score = next(scores)
        return {"target": {"mIoU": score}}, {"val/target/mIoU": score}

    trainer = make_trainer(tmp_path, Toy(), max_steps=8, checkpoint_every=2, eval_every=2, keep_checkpoints=1)
    trainer.evaluate = evaluate
    trainer.fit()
    trainer.close()
    folder = tmp_path / "checkpoints"
    assert os.readlink(folder / "best.pt") == "step_0000004.pt"  # the 9.0
    assert checkpoint.load(folder / "best.pt")["step"] == 4
    assert sorted(p.name for p in folder.glob("step_*.pt")) == ["step_0000004.pt", "step_0000008.pt"]
