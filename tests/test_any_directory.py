"""``python -m refign.train`` started outside the repository, its output going to a file: the shipped weights
are found through the package, the outputs land under the working directory, and the progress bars write a
few whole lines instead of redrawing one with ``\\r``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import tqdm.std

import refign
from refign.task import compose
from refign.utils import progress
from tests.methods import finish, train_cli


def test_the_default_run_started_elsewhere_finds_the_shipped_weights_and_logs_short_lines(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    launched = train_cli(
        f"paths.cache_dir={tmp_path.parent}/synthetic_cache",  # the synthetic images, shared between tests
        *(f"dataset.{node}.num_images=8" for node in ("train_source", "train_target")),
        *(f"dataset.val.{node}.num_images=4" for node in ("source", "target")),
        "trainer.max_steps=2",
        "trainer.num_workers=0",
        "trainer.log_every=1",
        log=tmp_path / "run.log",
        cwd=elsewhere,
    )
    out = finish(launched)
    # DAFormer + Refign from the shipped segmentor and matcher, written under the working directory
    assert len(list(elsewhere.glob("outputs/train/runs/*/checkpoints/last.pt"))) == 1
    assert "\r" not in out
    bar_lines = [line for line in out.splitlines() if line.startswith(("train:", "eval "))]
    # the bars write short lines of their own (a log line may be long: a warning naming a long path)
    assert bar_lines and max(len(line) for line in bar_lines) < 200
    assert max(len(line) for line in out.splitlines()) < 1000  # no bar updates run together into one line
    # a bar writes its first and its last state (the run lasts less than progress.LINE_EVERY_S)
    assert sum(line.startswith("train:") for line in bar_lines) == 2


def test_the_shipped_files_are_found_through_the_package_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = compose("train").paths
    assert Path(paths.assets_dir) == Path(refign.__file__).parent / "assets"
    assert {"segmentor_synthetic.pt", "uawarpc_small_synthetic.pt"} <= {
        p.name for p in Path(paths.assets_dir).iterdir()
    }
    assert paths.output_dir == "./outputs"  # the outputs stay where the run is started


@pytest.mark.parametrize("leave", [True, False])
def test_outside_a_terminal_a_bar_writes_a_line_every_interval_and_its_last_state(monkeypatch, leave):
    clock = [0.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    stream = io.StringIO()  # not a terminal
    bar = progress.progress_bar(total=100, desc="train", leave=leave, file=stream)
    for _ in range(100):  # one step a second; the postfix asks for a redraw every step
        clock[0] += 1
        bar.update(1)
        bar.set_postfix(loss="0.5")
    bar.close()
    lines = stream.getvalue().split("\n")
    assert lines.pop() == "" and "\r" not in stream.getvalue()
    # the first state at 0 s, one line at 30, 60 and 90 s, and the last state
    steps = [line.split("|")[2].split()[0] for line in lines]
    assert steps == ["0/100", "30/100", "60/100", "90/100", "100/100"]
