"""scripts/measure/paper_table.py: the dry runs and the estimates joined by experiment, the estimate-only rows
and the traces shared between experiments."""

from __future__ import annotations

import json

from scripts.measure import paper_table
from scripts.measure.common import GIB
from scripts.measure.dry_run import load_rows


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
    dry = [dry_run_row("acdc_refign_hrda_star"), dry_run_row("acdc_mic_hrda", evaluate_status="killed")]
    (tmp_path / "dry_run.json").write_text(json.dumps(dry))
    estimates = {
        "dark_zurich_refign_hrda_star": paper_table.estimate_row(
            "dark_zurich_refign_hrda_star",
            "acdc_refign_hrda_star",
            {"32": traced(22.71, 18696.2, 1.62), "bf16": traced(13.64, 18696.2, 1.62)},
        ),
        "acdc_mic_hrda": paper_table.estimate_row(
            "acdc_mic_hrda",
            "acdc_mic_hrda",
            {"32": traced(30.0, 20000, None), "bf16": traced(17.5, 20000, None)},
        ),
    }
    names = ["acdc_mic_hrda", "acdc_refign_hrda_star", "dark_zurich_refign_hrda_star"]
    text = paper_table.table(load_rows(tmp_path), estimates, names)
    header, rule, *rows = text.splitlines()
    assert header == paper_table.HEADER and rule.count("---") == header.count(" | ") + 1
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert all(len(c) == header.count(" | ") + 1 for c in cells)
    mic, hrda_acdc, hrda_dz = cells
    # measured only: the estimate's columns wait for its estimate
    assert hrda_acdc == ["acdc_refign_hrda_star", "1 (paper 2)", "242", "14.7 / 5.3"] + ["–"] * 3
    # estimated only (the mean ratio counts the official 50 % of steps that adapt on the references)
    assert hrda_dz == ["dark_zurich_refign_hrda_star", *["–"] * 3, "22.7 / 13.6", "18,696", "1.62× / 1.31×"]
    # a phase that failed is named, and a method without Refign has no ratio
    assert mic[2] == "242 (evaluate: killed)" and mic[4:] == ["30.0 / 17.5", "20,000", "– (no Refign)"]
    # the estimate-only row names the trace it shares
    assert paper_table.estimate_only_row(estimates["dark_zurich_refign_hrda_star"]) == (
        "| dark_zurich_refign_hrda_star (= acdc_refign_hrda_star) | 22.7 | 13.6 | 18,696 | 1.62× / 1.31× |"
    )


def test_an_experiment_with_the_networks_crop_and_batch_of_an_earlier_one_shares_its_trace(tmp_path):
    """Dark Zurich's DAFormer composes ACDC's networks, crop and batch: its row is ACDC's stored estimate (no
    estimate runs: both precisions' results are in the folder already)."""
    for precision, peak in (("32", 7.5), ("bf16", 5.3)):
        (tmp_path / f"acdc_refign_daformer_{precision}").mkdir()
        result = traced(peak, 5512.0, 1.26)
        (tmp_path / f"acdc_refign_daformer_{precision}" / "estimate.json").write_text(json.dumps(result))
    rows = paper_table.estimate_rows(["acdc_refign_daformer", "dark_zurich_refign_daformer"], tmp_path)
    assert rows["dark_zurich_refign_daformer"]["traced_as"] == "acdc_refign_daformer"
    assert rows["dark_zurich_refign_daformer"]["peak_gib"] == {"32": 7.5, "bf16": 5.3}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "acdc_refign_daformer_32",
        "acdc_refign_daformer_bf16",
    ]
