"""The benchmark table: mean ± std per row and per condition, resumable by skipping finished runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "benchmark", Path(__file__).parents[1] / "scripts" / "benchmark.py"
)
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def fake(target, night):
    return {"source": {"mIoU": 50.0}, "target": {"mIoU": target, "per_condition": {"night": night}}}


def test_table_reports_mean_and_std_per_row():
    times = {"a": [60, 120], "b": [float("nan")]}
    text = benchmark.table({"a": [fake(10, 1), fake(14, 3)], "b": [fake(20, 5)]}, times)
    lines = text.splitlines()
    assert lines[0] == "| method | source-val | target-val | night | min/run |"
    assert "| a | 50.0 ± 0.0 | 12.0 ± 2.8 | 2.0 ± 1.4 | 1.5 |" in lines
    assert "| b | 50.0 | 20.0 | 5.0 | – |" in lines


def test_finished_runs_are_not_repeated(tmp_path):
    run_dir = tmp_path / "a" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "eval_0000010.json").write_text(json.dumps(fake(1, 1)))
    result, seconds = benchmark.train("a", ["no.such=key"], 0, tmp_path)  # would fail if it ran
    assert result["target"]["mIoU"] == 1 and seconds != seconds  # NaN: no time was recorded
    (run_dir / "bench_time.json").write_text(json.dumps({"seconds": 90.0}))
    assert benchmark.train("a", ["no.such=key"], 0, tmp_path)[1] == 90.0
