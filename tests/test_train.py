"""Source-only training end to end: the loss falls, source-val is far above chance, target-val lags behind."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from refign.engine import checkpoint
from refign.engine.trainer import Trainer
from refign.models.segmentor import Segmentor
from refign.train import run
from tests.conftest import compose_cfg


def read_losses(run_dir):
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["train/loss"] for x in lines if "train/loss" in x]


def test_source_only_learns_and_shows_the_domain_gap(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "trainer.max_steps=300",
        "dataset.batch_size=4",
        "dataset.size=[96,192]",
        "dataset.crop_size=[96,96]",
        n_train=64,
        n_val=32,
    )
    results = run(cfg, tmp_path)
    losses = read_losses(tmp_path)
    assert len(losses) == 300
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, f"loss did not fall enough: {first:.3f} → {last:.3f}"
    chance = 100 / 19
    assert results["source"]["mIoU"] > 3 * chance
    assert results["target"]["mIoU"] < results["source"]["mIoU"] - 5
    assert set(results["target"]["per_condition"]) == {"night", "fog", "rain", "snow"}
    assert (tmp_path / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "eval_0000300.json").exists()


def test_bf16_autocasts_the_step_and_keeps_fp32_weights(tiny_cfg, tmp_path, monkeypatch):
    """precision=bf16: the network computes in bfloat16 inside the step (and the evaluation), the weights
    stay float32 and are updated."""
    outputs, initial = [], {}
    real_forward, real_fit = Segmentor.forward, Trainer.fit

    def recorded_forward(self, x):
        out = real_forward(self, x)
        outputs.append(out)
        return out

    def fit_from_a_copy_of_the_start(self, stop=None):
        initial.update(copy.deepcopy(self.train_step.method.model.state_dict()))
        return real_fit(self, stop)

    monkeypatch.setattr(Segmentor, "forward", recorded_forward)
    monkeypatch.setattr(Trainer, "fit", fit_from_a_copy_of_the_start)
    run(tiny_cfg("trainer.max_steps=2", "trainer.precision=bf16", n_train=8, n_val=4), tmp_path)
    assert len(outputs) == 2 + 4 + 4  # two steps, then 4 source-val and 4 target-val images
    assert {t.dtype for t in outputs} == {torch.bfloat16}
    trained = checkpoint.segmentor_state(checkpoint.load(tmp_path / "checkpoints" / "last.pt"), "last.pt")
    assert all(v.dtype == initial[k].dtype for k, v in trained.items())
    moved = [k for k, v in trained.items() if v.is_floating_point() and not torch.equal(v, initial[k])]
    assert len(moved) > 10


def test_the_default_run_is_daformer_refign_from_the_shipped_weights(tmp_path):
    """`python -m refign.train` with only the data made tiny: it builds and trains with both shipped files."""
    cfg = compose_cfg(
        [
            f"paths.output_dir={tmp_path}/outputs",
            f"paths.cache_dir={tmp_path.parent}/synthetic_cache",
            *(f"dataset.{node}.num_images=8" for node in ("train_source", "train_target")),
            *(f"dataset.val.{node}.num_images=4" for node in ("source", "target")),
            "trainer.max_steps=2",
            "trainer.num_workers=0",
            "trainer.log_every=1",
        ]
    )
    run(cfg, tmp_path)
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    aligner = state["method"]["pseudo_labeler._extra_state"]["aligner"]
    assert aligner["source"].endswith("uawarpc_small_synthetic.pt")
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("train/refign/adapt_to_ref" in x for x in logged) and any(
        "train/loss_fdist" in x for x in logged
    )
    # the student moved away from the shipped segmentor in two steps, but started from it
    shipped = torch.load(Path(cfg.init_weights), weights_only=True)
    trained = state["segmentor"]
    assert set(trained) == set(shipped)
    # weights, not BN statistics (running averages move fast, the step counters count the steps)
    floats = [k for k in shipped if shipped[k].is_floating_point() and ".running_" not in k]
    assert max((trained[k] - shipped[k]).abs().max() for k in floats) < 0.05
    assert any(not torch.equal(trained[k], shipped[k]) for k in floats)
