"""The benchmark table: mean ± std per row and per condition, resumable by skipping finished runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from scripts import ablation_table, benchmark


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
    assert result["target"]["mIoU"] == 1
    assert math.isnan(seconds)  # no time was recorded
    (run_dir / "bench_time.json").write_text(json.dumps({"seconds": 90.0}))
    assert benchmark.train("a", ["no.such=key"], 0, tmp_path)[1] == 90.0


def sweep_run(folder: Path, overrides: list[str], result: dict | None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("{}\n")
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if result is not None:
        (folder / "eval_0001000.json").write_text(json.dumps(result))


def test_ablation_table_groups_a_sweep_by_its_row_override_in_the_paper_order(tmp_path, capsys):
    # folder names say nothing: rows are read from each run's own overrides
    sweep_run(tmp_path / "s" / "0", ["refign=on", "+ablation=row3", "seed=0"], fake(30, 10))
    sweep_run(tmp_path / "s" / "1", ["refign=on", "+ablation=row1", "seed=0"], fake(20, 4))
    sweep_run(tmp_path / "s" / "2", ["refign=on", "+ablation=row1", "seed=1"], fake(24, 8))
    sweep_run(tmp_path / "s" / "3", ["refign=on", "+ablation=row3", "seed=1"], None)  # still running
    sweep_run(tmp_path / "other" / "0", ["refign=on", "+ablation=row3", "seed=2"], fake(34, 12))
    ablation_table.main([str(tmp_path / "s"), str(tmp_path / "other"), "--out", str(tmp_path / "t.md")])
    rows = [line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| " + ablation_table.ROWS["row1"],
        "| " + ablation_table.ROWS["row3"],
    ]
    assert rows[0].split(" | ")[2:4] == ["22.0 ± 2.8", "6.0 ± 2.8"]  # mean/std of (20, 24) and (4, 8)
    assert rows[1].split(" | ")[2:4] == ["32.0 ± 2.8", "11.0 ± 1.4"]
    assert "unfinished" in capsys.readouterr().err


def test_ablation_table_without_finished_runs_says_where_it_looked(tmp_path):
    sweep_run(tmp_path / "0", ["uda=daformer"], fake(1, 1))
    with pytest.raises(SystemExit, match=str(tmp_path)):
        ablation_table.main([str(tmp_path)])
