"""Two gloo processes under DDP: identical parameters on both ranks, equal to one process with the same
global batch (batch-independent norms and no dropout, so the runs are mathematically the same)."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from refign.build import build_method
from refign.engine import checkpoint
from refign.engine.dist import session
from refign.engine.reproducibility import seed_everything
from refign.engine.trainer import Trainer
from refign.train import run
from tests.conftest import tiny_overrides
from tests.methods import (
    METHODS,
    MICRO,
    assert_bit_equal,
    finish,
    kill_after_first_checkpoint,
    train_cli,
    wait_until,
    weights,
    worker,
)
from tests.test_trainer import Toy, make_step

COMMON = [
    "trainer.max_steps=3",
    "trainer.device=cpu",
    "dataset.batch_size=2",
    "head.dropout_ratio=0",
    "backbone.drop_path_rate=0",
    "head.norm_cfg.type=GN",
    "+head.norm_cfg.num_groups=8",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    """The environment torchrun gives a worker."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)


def _worker(rank: int, world: int, port: int, cfg, out_dir) -> None:
    _join(rank, world, port)
    fit = Trainer.fit

    def fit_and_dump(self, stop=None):
        result = fit(self, stop)
        torch.save(self.train_step.method.state_dict(), out_dir / f"rank{rank}.pt")
        return result

    Trainer.fit = fit_and_dump
    run(cfg, out_dir)


def test_two_process_ddp_matches_single_process(tiny_cfg, tmp_path):
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    ddp_dir.mkdir()
    run(tiny_cfg(*COMMON, n_train=8, n_val=4), single_dir)
    cfg = tiny_cfg(*COMMON, n_train=8, n_val=4)
    mp.spawn(_worker, args=(2, free_port(), cfg, ddp_dir), nprocs=2, join=True)

    r0, r1 = (torch.load(ddp_dir / f"rank{r}.pt") for r in (0, 1))
    single = checkpoint.method_state(checkpoint.load(single_dir / "checkpoints" / "last.pt"))
    # DDP averages two half-batch gradients where the single process takes one full-batch mean: the same
    # numbers up to summation order. AdamW divides each gradient by its own running magnitude, so where a
    # gradient is at rounding level (parameters from scratch that barely take part yet) that order decides the
    # direction of a whole lr-sized step; the CPU's kernels decide how many such elements there are (0.08 % on
    # this project's 2-core machine, 2026-12-06). Everything else agrees to 1e-4, and nothing moves further
    # apart than the 3 steps' learning rates allow (≤ 3.6e-4 backbone, 3.6e-3 head).
    far = total = 0
    for k, v in r0.items():
        torch.testing.assert_close(v, r1[k], rtol=0, atol=0, msg=f"ranks differ at {k}")
        if not v.is_floating_point():
            continue
        gap = (v - single[k]).abs()
        far += int((gap > 1e-5 + 1e-4 * single[k].abs()).sum())
        total += v.numel()
        assert float(gap.max()) < 1e-3, f"DDP differs from single at {k} by {float(gap.max())}"
    assert far < 0.005 * total, f"{far} of {total} weights differ between DDP and the single process"
    # the runs really trained: the weights moved away from the seeded initialisation
    seed_everything(0)
    initial = build_method(cfg).state_dict()
    moved = [k for k, v in single.items() if v.is_floating_point() and not torch.allclose(v, initial[k])]
    assert len(moved) > 10


def _toy_worker(rank: int, world: int, port: int, out_dir: Path) -> None:
    _join(rank, world, port)
    with session("cpu") as info:
        _toy_steps(info, out_dir)


def _toy_steps(info, out_dir: Path) -> None:
    """Three steps of the two-loss toy on this rank's row of the batch; the weights and the number of
    all-reduce rounds (DDP's last bucket of each synchronising backward) saved."""
    rounds = [0]

    def counted(state, bucket):
        rounds[0] += bucket.is_last()
        return default_hooks.allreduce_hook(None, bucket)

    train_step = make_step(Toy(), info)
    train_step.model.register_comm_hook(None, counted)
    for step in range(3):
        train_step({"x": toy_rows(step)[info.rank : info.rank + 1]}, step)
    torch.save(
        {"weight": train_step.method.net.weight.detach(), "rounds": rounds[0]}, out_dir / f"{info.rank}.pt"
    )


def toy_rows(step: int) -> torch.Tensor:
    return torch.tensor([[1.0 + step, -0.5 * step], [0.5, 2.0 - step]])


def test_losses_back_propagated_one_by_one_all_reduce_once_per_step(tmp_path):
    """The toy's two losses (``a`` keeps its graph for ``b``) are two backwards; under DDP the first runs
    inside DDP's forward and accumulates locally, the second all-reduces: one round per step, the ranks
    equal, and equal to one process given the mean input (the loss is linear in it, so its gradient is the
    mean of the ranks' gradients)."""
    mp.spawn(_toy_worker, args=(2, free_port(), tmp_path), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["rounds"] == r1["rounds"] == 3
    assert torch.equal(r0["weight"], r1["weight"])
    single = make_step(Toy())
    for step in range(3):
        single({"x": toy_rows(step).mean(0, keepdim=True)}, step)
    torch.testing.assert_close(r0["weight"], single.method.net.weight.detach(), rtol=1e-6, atol=1e-6)


def test_batch_size_not_divisible_by_world_size_is_rejected():
    from refign.data.loader import step_loader
    from refign.engine.dist import DistInfo

    info = DistInfo(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="not divisible by the world size 2"):
        step_loader(list(range(10)), global_batch=3, dist_info=info, seed=0, start_step=0, num_workers=0)


@pytest.mark.slow
def test_ddp_run_killed_after_a_checkpoint_resumes_bit_exactly(tmp_path):
    """Two gloo processes under torchrun, SIGKILLed together (a node failure) right after a checkpoint, then
    resumed: the weights equal those of an uninterrupted two-process run, bit for bit. Each rank draws its own
    random numbers (ClassMix, augmentation, dropout, Refign's adapt-to-reference choice), so every rank's
    random state must survive the checkpoint, not only the saving rank's."""
    args = [
        *tiny_overrides(tmp_path, n_train=8, n_val=2),
        *METHODS["daformer_rcs_refign"],
        *MICRO,
        "trainer.device=cpu",
        "trainer.max_steps=6",
        "trainer.checkpoint_every=2",
    ]
    straight, first = tmp_path / "straight", tmp_path / "outputs" / "killed" / "runs" / "first"
    finish(
        train_cli(
            *args, "task_name=straight", f"hydra.run.dir={straight}", torchrun=2, log=tmp_path / "a.log"
        )
    )
    killed = train_cli(
        *args,
        "task_name=killed",
        f"hydra.run.dir={first}",
        torchrun=2,
        log=tmp_path / "killed.log",
    )
    step = kill_after_first_checkpoint(killed, first / "checkpoints" / "last.pt", max_steps=6)
    second = tmp_path / "second"
    out = finish(
        train_cli(
            *args,
            "task_name=killed",
            "resume=auto",
            f"hydra.run.dir={second}",
            torchrun=2,
            log=second / "log",
        )
    )
    final = first / "checkpoints" / "last.pt"
    assert out.count(f"resumed from {final} at step {step}") == 2  # both ranks
    assert checkpoint.load(final)["step"] == 6
    assert_bit_equal(weights(straight / "checkpoints" / "last.pt"), weights(final))


def newest_checkpoint(runs: Path) -> Path | None:
    """The most recently written ``last.pt`` under a task's ``runs`` folder."""
    found = list(runs.glob(f"*/checkpoints/{checkpoint.LAST}"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def newest_step(runs: Path) -> int:
    """The step of the newest checkpoint under a task's ``runs`` folder (0 before the first)."""
    found = newest_checkpoint(runs)
    return checkpoint.load(found)["step"] if found else 0


@pytest.mark.slow
def test_torchrun_restarts_a_killed_rank_and_the_run_ends_bit_exactly(tmp_path):
    """A lost worker recovered inside one launch, as torchrun users do: ``torchrun --max-restarts=2 …
    resume=auto`` with rank 1 SIGKILLed after a checkpoint, twice in a row. Each time torchrun restarts both
    workers, which meet again in the store the attempts before left keys in (``refign.engine.dist`` keeps
    each attempt's apart; a restarted rank 0 used to connect to the dead rank's address) and resume from the
    newest checkpoint. The weights equal those of the uninterrupted run, bit for bit."""
    args = [
        *tiny_overrides(tmp_path, n_train=8, n_val=2),
        *METHODS["dacs"],
        *MICRO,
        "trainer.device=cpu",
        "trainer.max_steps=12",
        "trainer.checkpoint_every=2",
    ]
    straight = tmp_path / "straight"
    finish(
        train_cli(
            *args, "task_name=straight", f"hydra.run.dir={straight}", torchrun=2, log=tmp_path / "a.log"
        )
    )
    launched = train_cli(
        *args, "task_name=elastic", "resume=auto", torchrun=2, max_restarts=2, log=tmp_path / "elastic.log"
    )
    runs = tmp_path / "outputs" / "elastic" / "runs"
    for attempt in range(2):
        rank1 = worker(launched, rank=1, attempt=attempt)
        # an attempt's workers start once the attempt before is gone: this is the checkpoint it resumes from
        start = newest_step(runs)
        wait_until(lambda s=start: newest_step(runs) > s, f"a checkpoint after step {start}", launched)
        os.kill(rank1, signal.SIGKILL)
    out = finish(launched)
    final = newest_checkpoint(runs)
    resumed_at = [int(s) for s in re.findall(rf"resumed from {re.escape(str(final))} at step (\d+)", out)]
    assert len(resumed_at) == 4 and resumed_at[0] < resumed_at[2] < 12, out[-4000:]  # both ranks, twice
    assert newest_step(runs) == 12
    assert_bit_equal(weights(straight / "checkpoints" / "last.pt"), weights(final))
