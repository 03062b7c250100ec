"""scripts/measure/dry_run.py: a row from the real entry points on a small full-layout tree, the measurement of a
phase (peak memory of the child, the watchdog), and its refusals. The true-size run of the heaviest
experiment is the ``slow`` test at the end."""

from __future__ import annotations

import json
import sys
import zipfile

import pytest

from refign.data.synthetic.trees import write_tree
from scripts.measure import dry_run
from scripts.measure.common import GIB, run_watched


def test_a_row_from_train_evaluate_and_predict_on_a_small_tree(tmp_path, capsys):
    tree = tmp_path / "tree"
    write_tree(tree, ["cityscapes", "acdc"], 2, divisor=8, eval_images=1, log=lambda _: None)
    out = tmp_path / "out"
    argv = ["acdc_refign_daformer", "--data-root", str(tree), "--out", str(out), "--random-weights"]
    assert dry_run.main([*argv, "--batch-size", "1", "--", "debug=tiny_model"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed and all(line.startswith("[dry run, RANDOM WEIGHTS] ") for line in printed)

    (row,) = json.loads((out / "dry_run.json").read_text())
    assert row["experiment"] == "acdc_refign_daformer" and row["batch"] == "1 (paper 2)"
    assert row["random_weights"] and (out / "random_weights" / "mit_b5_mmseg.pth").is_file()
    assert list(row["phases"]) == ["train", "evaluate", "predict"]
    for phase in row["phases"].values():
        assert phase["status"] == "ok" and phase["cpu_s"] > 0 and 0.2 < phase["peak_gib"] < 8
    # the validation mIoU printed is the one refign.evaluate wrote, on the val split's 4 native-size labels
    assert (
        row["miou"]
        == json.loads((out / "acdc_refign_daformer" / "evaluate" / "eval.json").read_text())["acdc"]["mIoU"]
    )
    assert 0 <= row["miou"] <= 100 and row["s_per_step"] > 0 and row["cpu_s_per_step"] > 0
    # the training ran the steps only: no validation inside it (the evaluation is its own phase)
    logs = [
        json.loads(x)
        for x in (out / "acdc_refign_daformer" / "train" / "metrics.jsonl").read_text().split("\n")
        if x
    ]
    assert [x["step"] for x in logs if "train/loss" in x] == [1, 2]
    assert not any(k.startswith("val/") for x in logs for k in x)
    archive = out / "acdc_refign_daformer" / "predict" / "acdc_submission.zip"
    assert row["archive"].startswith("acdc_submission.zip") and len(zipfile.ZipFile(archive).namelist()) == 4
    table = (out / "dry_run.md").read_text().splitlines()
    assert table[0] == dry_run.HEADER and table[2].startswith(
        "| acdc_refign_daformer | 1 (paper 2) debug=tiny_model | random | ok |"
    )
    # the peak is the child's: the watchdog's samples of its resident set stay below it
    samples = [
        float(x.split(",")[1]) for x in (out / "acdc_refign_daformer" / "train_rss.csv").read_text().split()
    ]
    assert samples and max(samples) <= row["phases"]["train"]["peak_gib"] * 1.01


def test_the_watchdog_kills_a_phase_above_the_limit_and_the_peak_is_the_childs(tmp_path):
    grab = "import time; b = bytearray(600 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30)"
    phase = run_watched([sys.executable, "-c", grab], tmp_path / "a.log", 0.3 * GIB)
    assert phase.status.startswith("killed (") and phase.status.endswith(" > 0 GiB)") and phase.wall_s < 25
    small = "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    phase = run_watched([sys.executable, "-c", small], tmp_path / "b.log", 4 * GIB)
    assert phase.status == "ok" and 0.2 < phase.peak_gib < 0.5 and phase.group_peak_gib < 0.5


def test_unknown_experiments_and_missing_weights_are_errors_that_name_them(tmp_path, capsys):
    tree, out = tmp_path / "tree", tmp_path / "out"
    tree.mkdir()
    assert dry_run.main(["acdc_refign_dformer", "--data-root", str(tree), "--out", str(out)]) == 2
    assert "unknown experiment(s) ['acdc_refign_dformer']" in capsys.readouterr().err
    args = ["acdc_refign_daformer", "--data-root", str(tree), "--out", str(out)]
    assert dry_run.main([*args, "--", f"paths.pretrained_dir={tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err
    assert (
        f"backbone.pretrained={tmp_path / 'none' / 'mit_b5_mmseg.pth'}" in err and "--random-weights" in err
    )
    assert f"alignment.checkpoint={tmp_path / 'none' / 'uawarpc_megadepth.ckpt'}" in err
    assert not out.exists() and not (tmp_path / "none").exists()


@pytest.mark.slow
def test_the_heaviest_experiment_at_true_size(tmp_path):
    """Refign + MIC(HRDA) on a full-size tree (1024×2048 / 1080×1920) at batch 1 with the backbone's activations
    checkpointed (without, its first step passed the watchdog's 21 GiB on a 24 GiB machine), 2 steps: every
    phase runs, and evaluating needs no more memory than training (on a shared machine, run
    ``flock LOCKFILE make test-slow``)."""
    tree = tmp_path / "tree"
    write_tree(tree, ["cityscapes", "acdc"], 2, eval_images=1, log=lambda _: None)
    argv = [
        "acdc_refign_mic_hrda",
        "--data-root",
        str(tree),
        "--out",
        str(tmp_path / "out"),
        "--random-weights",
    ]
    checkpointing = "backbone.checkpoint_activations=true"
    assert dry_run.main([*argv, "--batch-size", "1", "--", checkpointing]) == 0
    (row,) = json.loads((tmp_path / "out" / "dry_run.json").read_text())
    assert row["overrides"] == [checkpointing]
    phases = row["phases"]
    assert [p["status"] for p in phases.values()] == ["ok"] * 3 and row["batch"] == "1 (paper 2)"
    assert phases["evaluate"]["peak_gib"] <= phases["train"]["peak_gib"]
    assert 0 <= row["miou"] <= 100 and row["archive"].startswith("acdc_submission.zip")
