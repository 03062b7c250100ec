"""Stopping a run cleanly when the cluster asks: finish the step, write a checkpoint, requeue, exit.

Slurm sends SIGTERM before it ends or preempts a job (SIGKILL follows after ``KillWait``), ``sbatch
--signal=USR1@120`` SIGUSR1; Python's default is to die on the spot, losing up to ``trainer.checkpoint_every``
steps. Here the signal only sets a flag that the trainer reads between steps (all ranks agree on the step);
the job is requeued as Lightning's ``SLURMEnvironment`` does. See docs/reliability.md#preemption.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from types import FrameType

import torch

from refign.engine.dist import DistInfo, all_reduce_sum

log = logging.getLogger(__name__)

# EX_TEMPFAIL of sysexits.h: "a temporary failure, the user is invited to retry" — the run is intact and
# continues with resume=auto (or by itself after a Slurm requeue).
EXIT_PREEMPTED = 75


class Preempted(SystemExit):
    """The run stopped at a step boundary on a signal, after writing its checkpoint. A ``SystemExit``: it
    ends the process (a whole ``-m`` sweep too) through every ``finally`` on its way, unhandled."""

    def __init__(self, signal_name: str, step: int, requeued: bool) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.signal_name, self.step, self.requeued = signal_name, step, requeued
        then = "the Slurm job was requeued and resumes by itself" if requeued else "continue with resume=auto"
        log.warning("stopped on %s at step %d, checkpoint written; %s", signal_name, step, then)


class StopSignals:
    """Catches the signals ``names`` (``trainer.stop_signals``; empty: none) for the life of a ``with`` block
    and records the first one, nothing else being safe in a handler; the trainer reads it between steps.
    Outside the main thread no handler can be installed (Python's rule): a warning says so."""

    def __init__(self, names: list[str]) -> None:
        unknown = [n for n in names if not hasattr(signal.Signals, n)]
        if unknown:
            raise ValueError(f"trainer.stop_signals: unknown signal(s) {unknown}; e.g. SIGTERM, SIGUSR1")
        self.names, self.signals = list(names), [signal.Signals[n] for n in names]
        self.received: str | None = None
        self._previous: dict[signal.Signals, object] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            if self.signals:
                log.warning("not the main thread: %s keep their default action", self.names)
            return self
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def agreed(self, dist_info: DistInfo) -> bool:
        """Whether any rank received a stop signal: the same answer on every rank (a collective under DDP,
        so every rank must call it at the same step)."""
        if not dist_info.distributed:
            return self.received is not None
        flag = torch.tensor(float(self.received is not None), device=dist_info.device)
        return bool(all_reduce_sum(flag).item())


def requeue_slurm_job() -> bool:
    """Ask Slurm to requeue this job (rank 0 only; an array task as ``<array job>_<task>``); False, with the
    reason logged, where that fails or the process is not a Slurm job."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = os.environ.get("SLURM_JOB_ID") if array_job is None or task is None else f"{array_job}_{task}"
    if job is None:
        return False
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.error("could not requeue Slurm job %s: %s", job, err)
        return False
    if done.returncode != 0:
        log.error("scontrol requeue %s failed (rc %d): %s", job, done.returncode, done.stderr.strip())
        return False
    log.info("requeued Slurm job %s", job)
    return True
