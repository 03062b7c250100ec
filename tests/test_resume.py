"""An interrupted run resumed with resume=auto reaches exactly the weights of an uninterrupted run."""

from __future__ import annotations

import logging

import pytest
import torch

from refign.engine import trainer as trainer_mod
from refign.engine.checkpoint import load, method_state
from refign.train import run


def final_weights(run_dir):
    return method_state(load(run_dir / "checkpoints" / "last.pt"))


def test_kill_and_resume_equals_uninterrupted(tiny_cfg, tmp_path, monkeypatch):
    common = [
        "trainer.max_steps=6",
        "trainer.checkpoint_every=3",
        "model.inference=whole",
        "dataset.batch_size=2",
    ]
    straight_dir = tmp_path / "straight"
    run(tiny_cfg(*common, "task_name=straight", n_train=8, n_val=2), straight_dir)

    real_step = trainer_mod.Trainer.train_step

    def dying_step(self, batch):
        if self.step == 4:  # the checkpoint of step 3 exists; step 4 never completes
            raise KeyboardInterrupt
        return real_step(self, batch)

    first_dir = tmp_path / "outputs" / "resumed" / "runs" / "first"
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg(*common, "task_name=resumed", n_train=8, n_val=2), first_dir)
    monkeypatch.setattr(trainer_mod.Trainer, "train_step", real_step)
    assert load(first_dir / "checkpoints" / "last.pt")["step"] == 3

    run(tiny_cfg(*common, "task_name=resumed", "resume=auto", n_train=8, n_val=2), tmp_path / "second")
    a, b = final_weights(straight_dir), final_weights(first_dir)
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_resume_auto_without_previous_run_starts_fresh(tiny_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run(
            tiny_cfg("trainer.max_steps=1", "task_name=nothing_before", "resume=auto", n_train=4, n_val=2),
            tmp_path,
        )
    assert "no previous run" in caplog.text
    assert load(tmp_path / "checkpoints" / "last.pt")["step"] == 1
