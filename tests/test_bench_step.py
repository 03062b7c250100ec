"""scripts/measure/bench_step.py: its table's arithmetic, and a CPU smoke run of the same code as the paper scale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.measure import bench_step

HEADER = "| precision | method | steps/s | s / 40k steps | h / 40k steps | peak GiB (CPU RSS, cumulative) | Refign/base |"


def test_table_gives_time_per_run_and_the_refign_step_time_ratio():
    rows = [
        {"precision": "32", "row": "daformer", "steps_per_s": 2.0, "peak_gib": 1.5},
        {"precision": "32", "row": "daformer_refign", "steps_per_s": 1.6, "peak_gib": 2.0},
        {"precision": "bf16", "row": "hrda_refign", "steps_per_s": 0.5, "peak_gib": 3.0},
    ]
    lines = bench_step.format_table(rows, "peak GiB (CPU RSS, cumulative)").splitlines()
    assert lines[0] == HEADER
    assert lines[2] == "| 32 | daformer | 2.000 | 20000 | 5.6 | 1.50 | – |"
    assert lines[3] == "| 32 | daformer_refign | 1.600 | 25000 | 6.9 | 2.00 | 1.25× |"  # 2.0 / 1.6
    assert lines[4] == "| bf16 | hrda_refign | 0.500 | 80000 | 22.2 | 3.00 | – |"  # no hrda row to compare


def test_paper_rows_compose_the_official_experiments(tmp_path):
    cfg = bench_step.compose_row("hrda_refign", "paper", tmp_path, [])
    assert cfg.task_name == "refign_hrda_star_acdc" and list(cfg.dataset.crop_size) == [1024, 1024]
    assert (
        cfg.backbone.num_layers[2] == 40 and cfg.alignment.coarse_size == 256
    )  # MiT-B5, the paper's matcher
    assert Path(cfg.alignment.checkpoint) == tmp_path / "uawarpc_megadepth.ckpt"
    assert Path(cfg.backbone.pretrained) == tmp_path / "segformer_b5_city_mmseg.pth"
    assert not bench_step.compose_row("daformer", "paper", tmp_path, []).refign.enabled


def run_small(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "scripts.measure.bench_step", "--scale", "small", "--device", "cpu", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_small_scale_smoke_run_prints_the_table_on_cpu():
    out = run_small(
        "--steps", "1", "--warmup", "0", "--rows", "daformer", "daformer_refign", "--precision", "32", "fp16"
    )
    assert "device: CPU" in out and "precision fp16 skipped" in out
    lines = out.splitlines()
    assert HEADER in lines
    table = lines[lines.index(HEADER) + 2 :]
    assert [line.split(" | ")[1] for line in table] == ["daformer", "daformer_refign"]
    assert table[1].endswith("× |")  # the Refign/base ratio


@pytest.mark.slow
def test_small_scale_every_row_and_precision():
    out = run_small("--steps", "2", "--warmup", "1", "--precision", "32", "bf16", "--clock", "cpu")
    assert "cpu clock" in out
    lines = out.splitlines()
    table = lines[lines.index(HEADER) + 2 :]
    assert [tuple(line.split(" | ")[:2]) for line in table] == [
        (f"| {p}", row) for p in ("32", "bf16") for row in bench_step.DEFAULT_ROWS
    ]
