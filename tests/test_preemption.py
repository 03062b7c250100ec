"""A signal from the cluster (Slurm's SIGTERM before a time limit or preemption, ``sbatch --signal=USR1``)
stops the run at the next step boundary with a checkpoint and exit code 75; the resumed run ends bit for bit
where an uninterrupted one does; on Slurm the job requeues itself and the requeued job resumes by itself."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest

from refign.engine import checkpoint
from refign.engine.preemption import EXIT_PREEMPTED, Preempted, StopSignals, requeue_slurm_job
from tests.conftest import tiny_overrides
from tests.methods import (
    METHODS,
    MICRO,
    assert_bit_equal,
    descendants,
    finish,
    kill,
    train_cli,
    wait_until,
    weights,
)
from tests.test_trainer import Toy, logged, make_trainer


class SignalledToy(Toy):
    """The toy of tests/test_trainer.py, which sends this process ``signum`` during step ``at``."""

    def __init__(self, signum: int, at: int) -> None:
        super().__init__()
        self.signum, self.at = signum, at

    def forward(self, batch, step, backward):
        if step == self.at:
            os.kill(os.getpid(), self.signum)
        return super().forward(batch, step, backward)


def last(run_dir: Path) -> dict:
    return checkpoint.load(run_dir / "checkpoints" / checkpoint.LAST)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_finishes_the_step_checkpoints_it_and_the_resumed_run_is_bit_equal(tmp_path, signum):
    straight = make_trainer(tmp_path / "straight", Toy(), max_steps=6)
    straight.fit()
    straight.close()

    stopped = make_trainer(tmp_path / "run", SignalledToy(signum, at=2), max_steps=6)
    with StopSignals(["SIGTERM", "SIGUSR1"]) as stop, pytest.raises(Preempted) as ended:
        stopped.fit(stop)
    stopped.close()
    assert ended.value.code == EXIT_PREEMPTED == 75
    assert ended.value.signal_name == signal.Signals(signum).name
    assert last(tmp_path / "run")["step"] == 3  # the step the signal came in was finished, then saved
    assert signal.getsignal(signum) is signal.SIG_DFL  # the handler is gone with the block

    resumed = make_trainer(tmp_path / "run", Toy(), max_steps=6)
    resumed.restore(last(tmp_path / "run"), tmp_path / "run")
    resumed.fit()
    resumed.close()
    assert_bit_equal(
        {"w": straight.train_step.method.net.weight}, {"w": resumed.train_step.method.net.weight}
    )


def test_the_steps_since_the_last_log_line_are_logged_before_a_signal_stops_the_run(tmp_path):
    """Logged every 4 steps, stopped after step 6: steps 5-6 get a line of their own at step 6 (they were
    lost with the process), the resumed run's next line covers 7-8 only, and every step is counted once."""
    stopped = make_trainer(tmp_path, SignalledToy(signal.SIGTERM, at=5), max_steps=8, log_every=4)
    with StopSignals(["SIGTERM"]) as stop, pytest.raises(Preempted):
        stopped.fit(stop)
    stopped.close()
    resumed = make_trainer(tmp_path, Toy(), max_steps=8, log_every=4)
    resumed.restore(last(tmp_path), tmp_path)
    resumed.fit()
    resumed.close()
    lines = [r for r in logged(tmp_path) if "train/y_doubled" in r]
    assert [r["step"] for r in lines] == [4, 6, 8]
    straight = make_trainer(tmp_path / "straight", Toy(), max_steps=8, log_every=1)
    straight.fit()
    straight.close()
    per_step = {
        r["step"]: r["train/y_doubled"] for r in logged(tmp_path / "straight") if "train/y_doubled" in r
    }
    for line, first in zip(lines, (1, 5, 7), strict=True):
        window = [per_step[s] for s in range(first, line["step"] + 1)]
        assert line["train/y_doubled"] == pytest.approx(sum(window) / len(window))


def test_a_signal_before_the_first_step_leaves_a_resumable_run(tmp_path):
    trainer = make_trainer(tmp_path, Toy(), max_steps=4, checkpoint_every=100)
    with StopSignals(["SIGTERM"]) as stop, pytest.raises(Preempted):
        os.kill(os.getpid(), signal.SIGTERM)  # while the run was being built
        trainer.fit(stop)
    trainer.close()
    assert last(tmp_path)["step"] == 0


def test_an_unknown_signal_name_is_refused():
    with pytest.raises(ValueError, match=r"trainer.stop_signals: unknown signal\(s\) \['SIGFOO'\]"):
        StopSignals(["SIGTERM", "SIGFOO"])


def fake_scontrol(folder: Path) -> Path:
    """An ``scontrol`` that records its arguments, first on a PATH it returns."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {folder / "calls"}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder


ARRAY_TASK = {"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7"}


@pytest.mark.parametrize(
    ("env", "job"), [({"SLURM_JOB_ID": "4242"}, "4242"), (ARRAY_TASK, "4242_7"), ({}, None)]
)
def test_requeue_names_the_job_or_its_array_task(tmp_path, monkeypatch, env, job):
    """``scontrol requeue`` is given an array task as ``<array job>_<task>`` (as Lightning's SLURMEnvironment
    names it), another job by its id; outside Slurm nothing is called and nothing is requeued."""
    bin_dir = fake_scontrol(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key in ARRAY_TASK:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert requeue_slurm_job() is (job is not None)
    calls = bin_dir / "calls"
    assert (calls.read_text().split() if calls.exists() else None) == (["requeue", job] if job else None)


def test_sigterm_in_a_slurm_job_requeues_it_and_the_requeued_job_resumes_by_itself(tmp_path):
    """The whole path through ``python -m refign.train``: Slurm's SIGTERM → checkpoint at the current step,
    exit 75, ``scontrol requeue <job>``; the requeued job (same command, ``SLURM_RESTART_COUNT=1``, no
    ``resume=auto``) continues the same run folder and ends bit-equal to an uninterrupted run."""
    args = [*tiny_overrides(tmp_path, n_train=8, n_val=2), *METHODS["dacs"], *MICRO, "trainer.max_steps=60"]
    straight = tmp_path / "straight"
    finish(train_cli(*args, "task_name=straight", f"hydra.run.dir={straight}", log=tmp_path / "straight.log"))

    bin_dir = fake_scontrol(tmp_path / "bin")
    slurm = {"SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    first = tmp_path / "outputs" / "job" / "runs" / "first"
    launched = train_cli(
        *args, "task_name=job", f"hydra.run.dir={first}", log=tmp_path / "job.log", env=slurm
    )
    metrics = first / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and metrics.read_text().count("\n") >= 3, "3 logged steps", launched)
    launched.proc.send_signal(signal.SIGTERM)
    try:
        launched.proc.wait(timeout=120)
    finally:
        if launched.proc.poll() is None:
            kill(launched)
    out = launched.log.read_text()
    assert launched.proc.returncode == EXIT_PREEMPTED, out[-3000:]
    stopped_at = last(first)["step"]
    assert 3 <= stopped_at < 60, out[-3000:]
    assert f"stopped on SIGTERM at step {stopped_at}" in out
    assert (bin_dir / "calls").read_text().split() == ["requeue", "4242"]

    requeued = {**slurm, "SLURM_RESTART_COUNT": "1"}
    again = (
        tmp_path / "outputs" / "job" / "runs" / "again"
    )  # a new folder, as a requeued job's new time stamp
    out = finish(train_cli(*args, "task_name=job", f"hydra.run.dir={again}", log=again / "log", env=requeued))
    assert f"at step {stopped_at}" in out and "SLURM_RESTART_COUNT=1" in out
    assert last(first)["step"] == 60
    assert not (again / "checkpoints" / checkpoint.LAST).exists()
    assert_bit_equal(
        weights(straight / "checkpoints" / "last.pt"), weights(first / "checkpoints" / "last.pt")
    )
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, 61))  # each step once, in order


@pytest.mark.slow
def test_sigterm_to_a_two_process_torchrun_run_stops_both_ranks_at_one_step(tmp_path):
    """Under torchrun the ranks agree on the step to stop at (at a logging step), rank 0 writes once, and
    the resumed two-process run ends bit-equal to an uninterrupted one."""
    args = [
        *tiny_overrides(tmp_path, n_train=8, n_val=2),
        *METHODS["dacs"],
        *MICRO,
        "trainer.device=cpu",
        "trainer.max_steps=40",
        "trainer.log_every=2",
    ]
    straight = tmp_path / "straight"
    finish(train_cli(*args, "task_name=s", f"hydra.run.dir={straight}", torchrun=2, log=tmp_path / "s.log"))
    first = tmp_path / "outputs" / "t" / "runs" / "first"
    launched = train_cli(*args, "task_name=t", f"hydra.run.dir={first}", torchrun=2, log=tmp_path / "t.log")
    metrics = first / "metrics.jsonl"
    wait_until(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2, "logged steps", launched)
    # as Slurm does at a time limit: every process of the job gets the signal
    for pid in [launched.proc.pid, *descendants(launched.proc.pid)]:
        os.kill(pid, signal.SIGTERM)
    launched.proc.wait(timeout=120)
    out = launched.log.read_text()
    stopped_at = last(first)["step"]
    assert out.count(f"stopped on SIGTERM at step {stopped_at}") == 2, out[-3000:]  # both ranks, one step
    out = finish(
        train_cli(
            *args,
            "task_name=t",
            "resume=auto",
            f"hydra.run.dir={tmp_path / 'b'}",
            torchrun=2,
            log=tmp_path / "b.log",
        )
    )
    assert last(first)["step"] == 40
    assert_bit_equal(
        weights(straight / "checkpoints" / "last.pt"), weights(first / "checkpoints" / "last.pt")
    )
