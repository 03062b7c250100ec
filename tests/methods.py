"""Every training method and combination, at a micro size, for the reproducibility tests (resume, sweeps,
DDP): the tests compare weights bit for bit, so a model a few kilobytes large checks the same thing as a
real one, in a fraction of the time."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from refign.engine.backward import LossBackward
from refign.engine.checkpoint import method_state
from refign.engine.step import TrainStep
from tests.conftest import CONF_DIR

ROOT = Path(CONF_DIR).parent

# Refign without a matcher file: the synthetic benchmark's ground-truth flow stands in for UAWarpC.
REFIGN_ORACLE = ["refign=on", "alignment=oracle"]  # the build has the target set load the flow
METHODS: dict[str, list[str]] = {
    "source_only": ["uda=source_only", "refign=off"],
    "dacs": ["uda=dacs", "refign=off"],
    "daformer_rcs": ["uda=daformer", "refign=off"],  # uda=daformer selects rcs=on
    "hrda": ["uda=hrda", "refign=off", "model.attention_channels=16"],
    "dacs_refign": ["uda=dacs", *REFIGN_ORACLE],
    "daformer_rcs_refign": ["uda=daformer", *REFIGN_ORACLE],
    "hrda_refign": ["uda=hrda", "model.attention_channels=16", *REFIGN_ORACLE],
}

# One transformer block per stage, 8-channel embeddings, 32-pixel crops; no spatial reduction in attention
# (HRDA's 16-pixel context view is too small for it).
MICRO = [
    "backbone.embed_dims=8",
    "backbone.num_layers=[1,1,1,1]",
    "backbone.num_heads=[1,1,1,1]",
    "backbone.sr_ratios=[1,1,1,1]",
    "head.channels=16",
    "head.embed_dims=16",
    "dataset.size=[32,64]",
    "dataset.crop_size=[32,32]",
    "dataset.batch_size=2",
    "model.inference=whole",
]


class Launched(NamedTuple):
    proc: subprocess.Popen
    log: Path


def train_cli(
    *args: str,
    log: Path,
    torchrun: int = 0,
    max_restarts: int = 0,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> Launched:
    """Start ``python -m refign.train ARGS`` in ``cwd`` (under torchrun with that many processes when
    ``torchrun``, which restarts a failed worker group up to ``max_restarts`` times), its output going to
    ``log``; ``env`` is added to the environment."""
    launcher = [
        *("-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}"),
        f"--max-restarts={max_restarts}",
    ]
    cmd = [sys.executable, *(launcher if torchrun else []), "-m", "refign.train", *args]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "HYDRA_FULL_ERROR": "1",
        **(env or {}),
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Launched(proc, log)


def finish(launched: Launched, timeout: float = 600) -> str:
    """Wait for a ``train_cli`` run to succeed; its output (the tail of which a failure shows). A run that
    outlasts ``timeout`` is killed, so that a hang fails the test instead of leaving processes behind."""
    try:
        launched.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(launched)
    out = launched.log.read_text(errors="replace")
    assert launched.proc.returncode == 0, out[-4000:]
    return out


def wait_until(done: Callable[[], bool], what: str, launched: Launched, timeout: float = 600) -> None:
    """Poll until ``done()``; fail, naming ``what`` was awaited, if the run ends (or the time runs out)
    first."""
    deadline = time.monotonic() + timeout
    while not done():
        out = launched.log.read_text(errors="replace")
        assert launched.proc.poll() is None, f"the run ended before {what}:\n{out[-4000:]}"
        assert time.monotonic() < deadline, f"not {what} after {timeout} s:\n{out[-4000:]}"
        time.sleep(0.01)


def wait_for(path: Path, launched: Launched, timeout: float = 600) -> None:
    """Poll until ``path`` exists; fail if the run ends (or the time runs out) first."""
    wait_until(path.exists, f"writing {path}", launched, timeout)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``): torchrun starts each worker in a session of its own,
    out of reach of a kill of torchrun's process group."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def worker(launched: Launched, rank: int, attempt: int, timeout: float = 600) -> int:
    """The process id of torchrun's worker of ``rank`` in its ``attempt``-th start (0 for the first, 1 after a
    restart: ``TORCHELASTIC_RESTART_COUNT``), waiting for it to start."""
    wanted = {f"RANK={rank}".encode(), f"TORCHELASTIC_RESTART_COUNT={attempt}".encode()}
    deadline = time.monotonic() + timeout
    while True:
        for pid in descendants(launched.proc.pid):
            try:
                environ = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
            except OSError:  # the process ended meanwhile
                continue
            if wanted <= environ:
                return pid
        out = launched.log.read_text(errors="replace")
        assert launched.proc.poll() is None, (
            f"the run ended before rank {rank}'s start {attempt}:\n{out[-4000:]}"
        )
        assert time.monotonic() < deadline, (
            f"no rank {rank} of start {attempt} after {timeout} s:\n{out[-4000:]}"
        )
        time.sleep(0.01)


def kill(launched: Launched) -> None:
    """SIGKILL the run and every process it started (torchrun and its workers alike, as a failing node
    takes them down) and reap it."""
    for pid in [*descendants(launched.proc.pid), launched.proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    launched.proc.wait()


def kill_after_first_checkpoint(launched: Launched, checkpoint: Path, max_steps: int) -> int:
    """SIGKILL a training run as soon as its first checkpoint appears; the step that checkpoint holds."""
    wait_for(checkpoint, launched)
    kill(launched)
    assert launched.proc.returncode == -signal.SIGKILL
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert 0 < step < max_steps, f"the run got to step {step} of {max_steps} before it was killed"
    return step


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The method's tensors (its extra states, e.g. Refign's matcher fingerprint, are not weights)."""
    state = method_state(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


def assert_bit_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same keys, and every tensor equal to the last bit."""
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


class SummedBackward(LossBackward):
    """The step as it was before one backward per loss: every loss kept, and their sum back-propagated once
    after the forward (all passes alive together): a ``TrainStep.loss_backward`` to compare against."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kept: list[torch.Tensor] = []

    def run(self, loss: torch.Tensor, retain_graph: bool) -> None:
        self.kept.append(loss)

    def backward_last(self, loss: torch.Tensor) -> None:
        super().run(sum([*self.kept, loss]), retain_graph=False)


@contextlib.contextmanager
def interrupted_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> Iterator[None]:
    """Within the block, the trainer's ``step``-th step raises ``KeyboardInterrupt`` (as a Ctrl-C would),
    which the block must end with; afterwards the real step is back, so the run can be resumed."""
    real_step = TrainStep.__call__

    def dying_step(self, batch, index):
        if index == step:
            raise KeyboardInterrupt
        return real_step(self, batch, index)

    monkeypatch.setattr(TrainStep, "__call__", dying_step)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(TrainStep, "__call__", real_step)
