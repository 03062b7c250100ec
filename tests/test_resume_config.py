"""``resume=auto`` continues only a run of the same configuration (a sweep point: its own point), and
``resume=PATH`` with another configuration is refused with the differing keys named."""

from __future__ import annotations

import logging
import re
import shutil

import pytest

from refign.engine import checkpoint, resume
from refign.models.weights import CheckpointError
from refign.train import run
from tests.conftest import tiny_overrides
from tests.methods import METHODS, MICRO, assert_bit_equal, finish, train_cli, weights


def last_step(run_dir) -> int:
    return checkpoint.load(run_dir / "checkpoints" / checkpoint.LAST)["step"]


def test_differences_name_what_changed_and_leave_out_what_a_resume_may_change():
    stored = {
        "seed": 5,
        "optim": {"lr": 0.01, "betas": [0.9, 0.999]},
        "trainer": {"max_steps": 4},
        "paths": {"x": 1},
    }
    asked = {
        "seed": 0,
        "optim": {"lr": 0.01, "betas": [0.9, 0.99]},
        "trainer": {"max_steps": 8},
        "paths": {"x": 2},
    }
    assert resume.differences(stored, asked) == {"optim.betas": ([0.9, 0.999], [0.9, 0.99]), "seed": (5, 0)}
    assert resume.differences(stored, {**stored, "new_key": 1}) == {"new_key": (None, 1)}
    assert resume.differences(stored, {**stored, "new_key": None}) == {}  # a newer key at its null default


def test_a_sweep_with_resume_auto_never_continues_another_runs_checkpoint(tiny_cfg, tmp_path, caplog):
    """The issue's case: after ``task_name=sw seed=5 optim.lr=0.01``, the points ``seed=0`` and ``seed=1`` of a
    ``resume=auto`` sweep each start fresh in their own folders; run again, a point continues its own run."""
    common = [*METHODS["source_only"], *MICRO, "task_name=sw", "trainer.max_steps=2"]
    sweeps = tmp_path / "outputs" / "sw" / "multirun"
    unrelated = tmp_path / "outputs" / "sw" / "runs" / "unrelated"
    run(tiny_cfg(*common, "seed=5", "optim.lr=0.01", n_train=4, n_val=2), unrelated)
    unrelated_weights = weights(unrelated / "checkpoints" / checkpoint.LAST)

    with caplog.at_level(logging.INFO):
        for seed in (0, 1):
            point = sweeps / "t1" / f"{seed}_seed-{seed}"
            run(tiny_cfg(*common, f"seed={seed}", "resume=auto", n_train=4, n_val=2), point)
            assert last_step(point) == 2  # fresh: 2 steps of its own, not 2 more on top of another run's
    assert "passed over" in caplog.text and "seed (5 → 0)" in caplog.text
    assert last_step(unrelated) == 2
    assert_bit_equal(weights(unrelated / "checkpoints" / checkpoint.LAST), unrelated_weights)  # untouched

    # the same sweep again, with more steps: each point continues its own run (in its first sweep's folder)
    for seed in (0, 1):
        later = sweeps / "t2" / f"{seed}_seed-{seed}"
        cfg = tiny_cfg(*common, f"seed={seed}", "resume=auto", "trainer.max_steps=3", n_train=4, n_val=2)
        run(cfg, later)
        assert last_step(sweeps / "t1" / f"{seed}_seed-{seed}") == 3
        assert not (later / "checkpoints" / checkpoint.LAST).exists()


def test_resume_path_with_another_seed_or_lr_is_refused_naming_the_keys(tiny_cfg, tmp_path, caplog):
    common = [*METHODS["source_only"], *MICRO, "trainer.max_steps=1"]
    run(tiny_cfg(*common, n_train=4, n_val=2), tmp_path / "first")
    ckpt = tmp_path / "first" / "checkpoints" / checkpoint.LAST
    changed = [*common, "seed=3", "optim.lr=0.5", f"resume={ckpt}", "trainer.max_steps=2"]
    with pytest.raises(
        CheckpointError, match=r"another configuration: optim.lr \([0-9.e-]+ → 0.5\), seed \(0 → 3\)"
    ):
        run(tiny_cfg(*changed, n_train=4, n_val=2), tmp_path / "second")
    assert last_step(tmp_path / "first") == 1  # nothing was written

    with caplog.at_level(logging.WARNING):  # knowingly
        run(tiny_cfg(*changed, "resume_force=true", n_train=4, n_val=2), tmp_path / "second")
    assert "resume_force=true: continuing" in caplog.text and "seed (0 → 3)" in caplog.text
    assert last_step(tmp_path / "first") == 2


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_resume_auto_passes_over_a_damaged_last_checkpoint_to_the_previous_intact_one(
    tiny_cfg, tmp_path, damage, caplog
):
    """A damaged ``last.pt`` is named, and ``resume=auto`` continues from the checkpoint before it — bit-equal
    to a run resumed from that checkpoint directly."""
    common = [*METHODS["dacs"], *MICRO, "trainer.checkpoint_every=2"]
    first = tmp_path / "outputs" / "a" / "runs" / "first"
    run(tiny_cfg(*common, "task_name=a", "trainer.max_steps=4", n_train=8, n_val=2), first)
    direct = tmp_path / "outputs" / "b" / "runs" / "direct"
    shutil.copytree(first, direct, symlinks=True)

    newest = first / "checkpoints" / "step_0000004.pt"
    data = bytearray(newest.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"checksum mismatch: {re.escape(str(newest))}"):
        checkpoint.load(newest)

    with caplog.at_level(logging.WARNING):
        run(
            tiny_cfg(*common, "task_name=a", "resume=auto", "trainer.max_steps=6", n_train=8, n_val=2),
            tmp_path / "x",
        )
    assert "step_0000004.pt) is corrupt" in caplog.text or "step_0000004.pt is corrupt" in caplog.text
    assert "falling back to" in caplog.text
    step2 = direct / "checkpoints" / "step_0000002.pt"
    run(
        tiny_cfg(*common, "task_name=b", f"resume={step2}", "trainer.max_steps=6", n_train=8, n_val=2),
        tmp_path / "y",
    )
    assert last_step(first) == last_step(direct) == 6
    assert_bit_equal(weights(first / "checkpoints" / "last.pt"), weights(direct / "checkpoints" / "last.pt"))


def test_a_real_resume_auto_sweep_never_continues_another_run(tmp_path):
    """The issue's commands through ``python -m refign.train -m``: after ``task_name=sw seed=5 optim.lr=0.01``,
    the points of ``-m task_name=sw seed=0,1 resume=auto`` start fresh in their own folders; the same sweep
    run again with more steps continues each point's own run."""
    args = [*tiny_overrides(tmp_path, n_train=4, n_val=2), *METHODS["source_only"], *MICRO, "task_name=sw"]
    unrelated = tmp_path / "outputs" / "sw" / "runs" / "unrelated"
    finish(
        train_cli(
            *args,
            "seed=5",
            "optim.lr=0.01",
            "trainer.max_steps=4",
            f"hydra.run.dir={unrelated}",
            log=tmp_path / "u.log",
        )
    )
    first = tmp_path / "outputs" / "sw" / "multirun" / "first"
    sweep = ["-m", *args, "seed=0,1", "resume=auto"]
    finish(train_cli(*sweep, "trainer.max_steps=2", f"hydra.sweep.dir={first}", log=tmp_path / "first.log"))
    points = sorted(p.parent.parent for p in first.glob("*/checkpoints/last.pt"))
    assert len(points) == 2 and [p.name[:2] for p in points] == ["0_", "1_"]  # one folder per point
    assert [last_step(p) for p in points] == [2, 2] and last_step(unrelated) == 4

    again = tmp_path / "outputs" / "sw" / "multirun" / "again"
    out = finish(
        train_cli(*sweep, "trainer.max_steps=3", f"hydra.sweep.dir={again}", log=tmp_path / "again.log")
    )
    assert [last_step(p) for p in points] == [3, 3] and last_step(unrelated) == 4
    assert not list(again.glob("*/checkpoints/last.pt"))
    assert out.count("passed over") >= 3  # the unrelated run for both points, the other seed's point
