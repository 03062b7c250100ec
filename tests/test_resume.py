"""An interrupted run resumed with resume=auto reaches exactly the weights of an uninterrupted run, for every
method and combination: in one process (an exception after a checkpoint), and across processes (SIGKILL)."""

from __future__ import annotations

import logging

import pytest
import torch

from refign.engine.checkpoint import load
from refign.engine.checkpoint_store import sidecar
from refign.train import run
from tests.conftest import tiny_overrides
from tests.methods import (
    METHODS,
    MICRO,
    assert_bit_equal,
    finish,
    interrupted_at_step,
    kill_after_first_checkpoint,
    train_cli,
    weights,
)


def last(run_dir):
    return run_dir / "checkpoints" / "last.pt"


@pytest.mark.parametrize("method", METHODS)
def test_interrupted_and_resumed_equals_uninterrupted(method, tiny_cfg, tmp_path, monkeypatch):
    common = [*METHODS[method], *MICRO, "trainer.max_steps=4", "trainer.checkpoint_every=2"]
    straight_dir = tmp_path / "straight"
    run(tiny_cfg(*common, "task_name=straight", n_train=8, n_val=2), straight_dir)

    first_dir = tmp_path / "outputs" / "resumed" / "runs" / "first"
    with interrupted_at_step(monkeypatch, 3):  # the checkpoint of step 2 exists; step 3 never completes
        run(tiny_cfg(*common, "task_name=resumed", n_train=8, n_val=2), first_dir)
    assert load(last(first_dir))["step"] == 2

    run(tiny_cfg(*common, "task_name=resumed", "resume=auto", n_train=8, n_val=2), tmp_path / "second")
    assert load(last(first_dir))["step"] == 4
    assert_bit_equal(weights(last(straight_dir)), weights(last(first_dir)))


def test_resume_auto_without_previous_run_starts_fresh(tiny_cfg, tmp_path, caplog):
    cfg = tiny_cfg(
        *METHODS["source_only"], *MICRO, "trainer.max_steps=1", "task_name=nothing_before", "resume=auto"
    )
    with caplog.at_level(logging.INFO):
        run(cfg, tmp_path)
    assert "no previous run" in caplog.text
    assert load(last(tmp_path))["step"] == 1


def test_resume_with_another_world_size_warns_and_uses_its_rank_state(tiny_cfg, tmp_path, caplog):
    common = [*METHODS["dacs"], *MICRO, "trainer.max_steps=1"]
    run(tiny_cfg(*common, "task_name=two_ranks", n_train=4, n_val=2), tmp_path / "first")
    ckpt = last(tmp_path / "first")
    state = load(ckpt)
    state["rng"] = [state["rng"][0], {"not": "used by rank 0"}]  # as written by a 2-process run
    torch.save(state, ckpt)
    sidecar(
        ckpt.resolve()
    ).unlink()  # edited by hand: its checksum no longer applies (a file without one loads)
    with caplog.at_level(logging.WARNING):
        run(tiny_cfg(*common, "trainer.max_steps=2", f"resume={ckpt}", n_train=4, n_val=2), tmp_path / "x")
    assert "random state of 2 rank(s), this run has 1" in caplog.text
    assert load(ckpt)["step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_sigkill_after_a_checkpoint_and_resume_equals_uninterrupted(method, tmp_path):
    args = [
        *tiny_overrides(tmp_path, n_train=8, n_val=2),
        *METHODS[method],
        *MICRO,
        "trainer.max_steps=8",
        "trainer.checkpoint_every=2",
    ]
    straight, first = tmp_path / "straight", tmp_path / "outputs" / "killed" / "runs" / "first"
    finish(train_cli(*args, "task_name=straight", f"hydra.run.dir={straight}", log=tmp_path / "straight.log"))

    killed = train_cli(*args, "task_name=killed", f"hydra.run.dir={first}", log=tmp_path / "killed.log")
    step = kill_after_first_checkpoint(killed, last(first), max_steps=8)
    second = tmp_path / "second"
    out = finish(
        train_cli(*args, "task_name=killed", "resume=auto", f"hydra.run.dir={second}", log=second / "log")
    )
    assert f"resumed from {last(first)} at step {step}" in out
    assert load(last(first))["step"] == 8
    assert_bit_equal(weights(last(straight)), weights(last(first)))
