"""No host synchronisation in the hot loop: between logging steps the trainer never reads a tensor's value on
the host (on a GPU every such read waits for the queued kernels); it logs window means at ``log_every``."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from refign.engine.step import TrainStep
from refign.engine.window import MetricWindow
from refign.train import run
from refign.uda.source_only import SourceOnly
from tests.methods import MICRO

# every way Python code turns a tensor into a host value (or branches on one)
CONVERSIONS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
PACKAGE = Path(__file__).resolve().parents[1] / "refign"
# the GPU configuration (optim.fused=null picks it on CUDA); CPU runs read the non-finite flag on the host
FUSED = ["optim.fused=true"]


@contextmanager
def counting_conversions(monkeypatch, calls: list[tuple[str, str]]):
    """While active, record (conversion, calling file) for every tensor → host conversion."""

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            caller = Path(sys._getframe(1).f_code.co_filename)
            calls.append(
                (name, str(caller.relative_to(PACKAGE.parent)) if PACKAGE in caller.parents else str(caller))
            )
            return original(self, *args, **kwargs)

        return counted

    with monkeypatch.context() as m:
        for name in CONVERSIONS:
            m.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
        yield


def count_in_hot_loop(monkeypatch) -> list[tuple[str, str]]:
    """Count conversions inside every training step and scalar accumulation (not in the logging step's
    window read, the checkpoints or the evaluation)."""
    calls: list[tuple[str, str]] = []
    for owner, method in ((TrainStep, "__call__"), (MetricWindow, "add")):
        original = getattr(owner, method)

        def counted(self, *args, _original=original, **kwargs):
            with counting_conversions(monkeypatch, calls):
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(owner, method, counted)
    return calls


def logged_losses(run_dir: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {x["step"]: x["train/loss"] for x in lines if "train/loss" in x}


def test_the_step_reads_nothing_on_the_host_and_logs_window_means(tiny_cfg, tmp_path, monkeypatch):
    losses = []
    forward = SourceOnly.forward

    def recording(self, batch, step, backward):
        out = forward(self, batch, step, backward)
        losses.append(backward.losses["src"].clone())
        return out

    monkeypatch.setattr(SourceOnly, "forward", recording)
    calls = count_in_hot_loop(monkeypatch)
    # the fused update (the default on CUDA, optim.fused=null) skips a non-finite step on the device
    run(tiny_cfg(*FUSED, "trainer.max_steps=5", "trainer.log_every=3", n_train=8, n_val=2), tmp_path)

    assert calls == []
    assert len(losses) == 5
    per_step = [float(x) for x in losses]
    logged = logged_losses(tmp_path)
    assert sorted(logged) == [3, 5]  # every log_every steps, and at the end
    assert logged[3] == pytest.approx(sum(per_step[:3]) / 3, rel=1e-6)
    assert logged[5] == pytest.approx(sum(per_step[3:]) / 2, rel=1e-6)


def test_refign_statistics_stay_on_the_device(tiny_cfg, tmp_path, monkeypatch, matcher_file):
    """DAFormer + Refign (aligning every step): the engine, Refign and the matcher read nothing on the host.
    What is left are the method's own host draws, as in the official code: ClassMix picks half of the classes
    present in each source label with NumPy, and the photometric augmentation draws its factors from CPU
    tensors (no device involved)."""
    calls = count_in_hot_loop(monkeypatch)
    cfg = tiny_cfg(
        *MICRO,
        *FUSED,
        "uda=daformer",
        "refign=on",
        f"alignment.checkpoint={matcher_file}",
        "refine.adapt_to_ref=false",
        "trainer.max_steps=3",
        "trainer.log_every=2",
        n_train=8,
        n_val=2,
    )
    run(cfg, tmp_path)
    assert {file for _, file in calls} <= {"refign/uda/mix.py", "refign/uda/augment.py"}, calls
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    stats = [x for x in lines if "train/refign/trust_s" in x]
    assert [x["step"] for x in stats] == [2, 3]
    for x in stats:
        assert 0 < x["train/refign/trust_s"] <= 1 and 0 <= x["train/refign/warp_valid_fraction"] <= 1
        assert x["train/refign/adapt_to_ref"] == 0.0
