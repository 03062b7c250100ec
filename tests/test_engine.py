"""Engine behaviour around the happy path: non-finite losses, gradient clipping, wandb offline logging."""

from __future__ import annotations

import pytest
import torch

from refign.engine.checkpoint import load, method_state
from refign.engine.trainer import NonFiniteLossError
from refign.train import run
from refign.uda.source_only import SourceOnly
from tests.methods import assert_bit_equal


@pytest.mark.parametrize("fused", ["true", "false"])  # skipped on the device (CUDA default) or by the host
def test_non_finite_losses_skip_steps_then_stop_keeping_the_last_good_checkpoint(
    tiny_cfg, tmp_path, monkeypatch, fused
):
    calls = {"n": 0}
    real_forward = SourceOnly.forward

    def poisoned(self, batch, step, backward):
        calls["n"] += 1
        nan = calls["n"] >= 4  # three good steps, then NaN forever
        return real_forward(self, batch, step, lambda n, v, **kw: backward(n, v * float("nan") if nan else v))

    monkeypatch.setattr(SourceOnly, "forward", poisoned)
    cfg = tiny_cfg(
        f"optim.fused={fused}",
        "trainer.max_steps=20",
        "trainer.max_nonfinite_steps=4",
        "trainer.checkpoint_every=2",
        n_train=8,
        n_val=2,
    )
    with pytest.raises(NonFiniteLossError, match="4 consecutive non-finite losses or gradients by step 7"):
        run(cfg, tmp_path)
    state = load(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 2  # step 4's checkpoint was not written: steps 3 and 4 had been skipped
    assert all(torch.isfinite(v).all() for v in method_state(state).values() if v.is_floating_point())
    assert load(tmp_path / "checkpoints" / "diverged_0000007.pt")["step"] == 7


def test_a_diverging_learning_rate_stops_the_run_and_keeps_the_state_before_the_divergence(
    tiny_cfg, tmp_path
):
    """The issue's ``optim.lr=1e30``: the warm-up's first step is harmless, its second blows the weights up
    with a finite loss (and is checkpointed, as nothing is wrong yet), every step after is non-finite. The
    run stops; ``last.pt`` is the checkpoint before the divergence (finite, equal to a run of one step), and
    a run resumes from it."""
    common = [
        "optim.lr=1e30",
        "schedule.warmup_ratio=1e-36",  # step 0 at 1e-6, step 1 at 2e29
        "trainer.checkpoint_every=1",
        "trainer.max_nonfinite_steps=5",
        "trainer.max_steps=20",
    ]
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite losses or gradients by step 7"):
        run(tiny_cfg(*common, n_train=8, n_val=2), tmp_path / "diverged")
    kept = load(tmp_path / "diverged" / "checkpoints" / "last.pt")
    assert kept["step"] == 1
    run(tiny_cfg(*common, "trainer.max_steps=1", n_train=8, n_val=2), tmp_path / "one_step")
    one_step = load(tmp_path / "one_step" / "checkpoints" / "last.pt")
    assert_bit_equal(method_state(kept), method_state(one_step))
    blown_up = load(tmp_path / "diverged" / "checkpoints" / "diverged_0000007.pt")
    assert max(float(v.abs().max()) for v in method_state(blown_up).values() if v.is_floating_point()) > 1e20

    ckpt = tmp_path / "diverged" / "checkpoints" / "last.pt"
    run(tiny_cfg(*common, f"resume={ckpt}", "trainer.max_steps=2", n_train=8, n_val=2), tmp_path / "resumed")
    assert load(ckpt)["step"] == 2


def test_fp16_gradients_are_unscaled_then_clipped_before_the_update(tiny_cfg, tmp_path, monkeypatch):
    """The optimiser must see gradients of norm ``grad_clip`` (unscaled first, then clipped): clipping the
    scaled gradients would hand it a norm 1/scale as large, not clipping at the unscaled norm."""
    seen = []
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    cfg = tiny_cfg(
        "trainer.max_steps=3", "trainer.precision=fp16", "trainer.grad_clip=1e-3", n_train=8, n_val=2
    )
    run(cfg, tmp_path)
    assert seen and all(abs(n - 1e-3) < 1e-6 for n in seen), seen  # every unscaled norm exceeds 1e-3
    scaler = load(tmp_path / "checkpoints" / "last.pt")["scaler"]
    assert scaler["scale"] > 1 and scaler["_growth_tracker"] == len(seen)  # scaled, no step skipped


def test_wandb_offline_run_is_written_locally(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_cfg("trainer.max_steps=2", "logger=wandb", n_train=8, n_val=2)
    run(cfg, tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert (tmp_path / "metrics.jsonl").read_text().count('"train/loss":') == 2
