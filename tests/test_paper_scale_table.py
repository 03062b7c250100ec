"""scripts/paper_scale_table.py: the dry runs and the estimates joined by experiment, and estimate_table's rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parents[1] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


paper_scale_table = load_script("paper_scale_table")
estimate_table = load_script("estimate_table")
GIB = 2**30


def dry_run_row(name: str, evaluate_status: str = "ok") -> dict:
    phase = {"status": "ok", "cpu_s": 100.0, "peak_gib": 14.66}
    return {
        "experiment": name,
        "batch": "1 (paper 2)",
        "random_weights": True,
        "phases": {"train": phase, "evaluate": {**phase, "status": evaluate_status, "peak_gib": 5.34}},
        "s_per_step": 300.0,
        "cpu_s_per_step": 241.6,
        "miou": 1.234,
        "archive": "acdc_submission.zip (0.2 MiB)" if evaluate_status == "ok" else None,
        "commit": "abc1234",
    }


def traced(peak_gib: float, gflops: float, ratio: float | None) -> dict:
    return {"peak": peak_gib * GIB, "flops": gflops * 1e9, "refign_flop_ratio": ratio}


def test_rows_join_measured_and_estimated_figures_by_experiment(tmp_path):
    (tmp_path / "dry").mkdir()
    (tmp_path / "est").mkdir()
    dry = [dry_run_row("acdc_refign_hrda_star"), dry_run_row("acdc_mic_hrda", evaluate_status="killed")]
    (tmp_path / "dry" / "dry_run.json").write_text(json.dumps(dry))
    estimates = [
        estimate_table.row(
            "dark_zurich_refign_hrda_star",
            "acdc_refign_hrda_star",
            {"32": traced(22.71, 18696.2, 1.62), "bf16": traced(13.64, 18696.2, 1.62)},
        ),
        estimate_table.row(
            "acdc_mic_hrda",
            "acdc_mic_hrda",
            {"32": traced(30.0, 20000, None), "bf16": traced(17.5, 20000, None)},
        ),
    ]
    (tmp_path / "est" / "estimate_table.json").write_text(json.dumps(estimates))
    names = ["acdc_mic_hrda", "acdc_refign_hrda_star", "dark_zurich_refign_hrda_star"]
    text = paper_scale_table.table(
        paper_scale_table.load(tmp_path / "dry" / "dry_run.json"),
        paper_scale_table.load(tmp_path / "est" / "estimate_table.json"),
        names,
    )
    header, rule, *rows = text.splitlines()
    assert header == paper_scale_table.HEADER and rule.count("---") == header.count(" | ") + 1
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert all(len(c) == header.count(" | ") + 1 for c in cells)
    mic, hrda_acdc, hrda_dz = cells
    # measured only: the estimate's columns wait for estimate_table
    assert (
        hrda_acdc
        == ["acdc_refign_hrda_star", "1 (paper 2)", "ok", "242", "14.7 / 5.3", "1.23", "written"] + ["–"] * 3
    )
    # estimated only (the mean ratio counts the official 50 % of steps that adapt on the references)
    assert hrda_dz == ["dark_zurich_refign_hrda_star", *["–"] * 6, "22.7 / 13.6", "18,696", "1.62× / 1.31×"]
    # a phase that failed is named, and a method without Refign has no ratio
    assert (
        mic[2] == "evaluate: killed"
        and mic[6] == "–"
        and mic[7:] == ["30.0 / 17.5", "20,000", "– (no Refign)"]
    )
