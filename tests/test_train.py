"""Source-only training end to end: the loss falls, source-val is far above chance, target-val lags behind."""

from __future__ import annotations

import json

import pytest

from refign.train import run


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


@pytest.mark.parametrize("precision", ["bf16"])
def test_mixed_precision_step_runs(tiny_cfg, tmp_path, precision):
    cfg = tiny_cfg("trainer.max_steps=2", f"trainer.precision={precision}", n_train=8, n_val=4)
    results = run(cfg, tmp_path)
    assert 0 <= results["source"]["mIoU"] <= 100
