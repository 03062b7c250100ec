"""Dashboards for sweeps (issue 29), read back from what wandb writes offline: sweep points named by their
overrides, grouped and tagged; one wandb run per training across a resume, each step once (in
``metrics.jsonl`` too); the evaluation's tables and summary; the result tables of the scripts; and a run
computes the same with and without wandb."""

from __future__ import annotations

import json
import re
import shlex
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from wandb.proto import wandb_internal_pb2

from refign import evaluate
from refign.align_train import run as align_run
from refign.engine.checkpoint import load
from refign.engine.loggers import MetricLogger
from refign.engine.wandb_run import RUN_FILE
from refign.train import run
from refign.uda.source_only import SourceOnly
from scripts import ablation_table, bench_refign
from tests.alignment.test_align_resume import TINY as ALIGN_TINY
from tests.alignment.test_align_train import align_cfg
from tests.conftest import CONF_DIR, compose_cfg, tiny_overrides
from tests.methods import METHODS, MICRO, assert_bit_equal, finish, interrupted_at_step, train_cli, weights

ROOT = Path(CONF_DIR).parent


# ---- reading an offline run (the .wandb file: wandb's LevelDB-style log of protobuf records) ---------------
BLOCK, HEADER = 32768, 7  # the log's block size; the file header (":W&B", magic, version) and a record header


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, chunks = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if pos + HEADER + length > len(data):  # still being written
            return
        chunks += data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


@dataclass
class OfflineRun:
    folder: Path
    run: wandb_internal_pb2.RunRecord | None = None
    history: list[dict] = field(default_factory=list)  # one dict per logged row, "_step" included
    summary: dict = field(default_factory=dict)

    @property
    def config(self) -> dict:
        return {u.key: json.loads(u.value_json) for u in self.run.config.update}


def items(updates) -> dict:
    """``{"key": value}`` of history/summary items; a nested key is joined with dots (``tab.path``)."""
    return {".".join(u.nested_key) or u.key: json.loads(u.value_json) for u in updates}


def finished_records(folder: Path, timeout: float = 60) -> list[wandb_internal_pb2.Record]:
    """The records of an offline run once its ``exit`` record is written: ``run.finish()`` returns before
    wandb's service has flushed the file."""
    path, deadline = next(folder.glob("run-*.wandb")), time.monotonic() + timeout
    while True:
        found = list(records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            return found
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout} s"
        time.sleep(0.05)


def offline_runs(run_dir: Path) -> list[OfflineRun]:
    """The offline runs written under ``run_dir/wandb``, oldest first."""
    found = []
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        offline = OfflineRun(folder)
        for record in finished_records(folder):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                offline.run = record.run
            elif kind == "history":
                offline.history.append(items(record.history.item))
            elif kind == "summary":
                offline.summary.update(items(record.summary.update))
        found.append(offline)
    return found


def logged_steps(runs: list[OfflineRun], key: str) -> list[int]:
    return [row["_step"] for r in runs for row in r.history if key in row]


def jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "cpu_time")} for r in records]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """wandb offline and quiet, with every folder it writes under ``tmp_path``."""
    for var, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_DIR": str(tmp_path / "wandb_home"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb_home" / "cache"),
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb_home" / "config"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb_home" / "data"),
        "WANDB_ARTIFACT_DIR": str(tmp_path / "wandb_home" / "artifacts"),
    }.items():
        monkeypatch.setenv(var, value)


# ---- names, groups, tags -----------------------------------------------------------------------------------
def test_sweep_points_are_named_by_their_overrides_in_one_group_with_tags(tmp_path, offline):
    """``-m`` with ``logger=wandb``: each point's run is named by its folder (without the number), both are
    in the sweep's group, tagged with method, dataset and switches; seed and ablation row are config values."""
    sweep_dir = tmp_path / "multirun" / "2026-12-06_10-00-00"
    args = [*tiny_overrides(tmp_path, n_train=4, n_val=2), *METHODS["daformer_rcs_refign"], *MICRO]
    args += ["trainer.max_steps=1", "+ablation=row3", "logger=wandb", "task_name=abl"]
    sweep = train_cli("-m", *args, "seed=0,1", f"hydra.sweep.dir={sweep_dir}", log=tmp_path / "sweep.log")
    finish(sweep)

    points = sorted(sweep_dir.glob("[0-9]_*"))
    assert len(points) == 2
    for seed, point in enumerate(points):
        (offline_run,) = offline_runs(point)
        record = offline_run.run
        assert record.display_name == point.name.split("_", 1)[1]  # the folder's name without the number
        assert "logger" not in record.display_name  # the logger changes where a run reports, not what
        assert record.run_group == "abl-2026-12-06_10-00-00"
        assert record.job_type == "train"
        assert set(record.tags) == {"daformer", "synthetic", "refign", "oracle", "rcs", "ablation-row3"}
        assert offline_run.config["seed"] == seed and offline_run.config["ablation_row"] == 3
        assert json.loads((point / RUN_FILE).read_text())["id"] == record.run_id
    assert len({offline_runs(p)[0].run.display_name for p in points}) == 2


def test_a_matcher_training_is_an_align_train_run(tmp_path, offline):
    """``refign.align_train logger=wandb``: job type ``align_train``, tagged with data and stage;
    its flat PCK results log as scalars (no per-class table)."""
    align_run(align_cfg(tmp_path, *ALIGN_TINY, "trainer.max_steps=2", "logger=wandb"), tmp_path / "run")
    (matcher,) = offline_runs(tmp_path / "run")
    assert matcher.run.job_type == "align_train" and matcher.run.display_name == "align_train"
    assert set(matcher.run.tags) == {"synthetic", "stage1"}  # + the matcher's choice in a Hydra job
    assert logged_steps([matcher], "val/synthetic/pck5") == [2]


# ---- one run per training ----------------------------------------------------------------------------------
def test_a_resumed_run_continues_its_wandb_run_and_logs_each_step_once(
    tiny_cfg, tmp_path, offline, monkeypatch, caplog
):
    """Interrupted after step 5 (checkpoint at 4), resumed: one run id, each step sent once, and
    ``metrics.jsonl`` holds steps 1..6 once, in order, the drop of the stale step 5 said in the log."""
    common = ["trainer.max_steps=6", "trainer.checkpoint_every=2", "trainer.eval_every=3", "logger=wandb"]
    run_dir = tmp_path / "run"
    with interrupted_at_step(monkeypatch, 5):
        run(tiny_cfg(*common, n_train=4, n_val=2), run_dir)
    assert load(run_dir / "checkpoints" / "last.pt")["step"] == 4
    resume = f"resume={run_dir / 'checkpoints' / 'last.pt'}"
    run(tiny_cfg(*common, resume, n_train=4, n_val=2), tmp_path / "unused")

    first, second = offline_runs(run_dir)
    assert (
        first.run.run_id
        == second.run.run_id
        == load(run_dir / "checkpoints" / "last.pt")["logger"]["wandb"]["id"]
    )
    assert first.run.display_name == second.run.display_name
    assert logged_steps([first], "train/loss") == [1, 2, 3, 4, 5]
    assert logged_steps([second], "train/loss") == [6]  # 5 was sent before the interruption
    assert logged_steps([first, second], "val/target/mIoU") == [3, 6]
    records = jsonl(run_dir)
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    assert "continues at step 4; dropped 1 record(s) of later steps" in caplog.text


def test_metrics_file_of_a_resumed_run_drops_later_and_cut_records(tmp_path, caplog):
    """Resumed at step 3: the interrupted attempt's records of steps 4-5 and a line cut by the kill go, the
    rest keeps its order, and the new records follow."""
    lines = [json.dumps({"step": s, "train/loss": s}) for s in (1, 2, 3, 3, 4, 5)] + ['{"step": 6, "tr']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    logger = MetricLogger(tmp_path, enabled=True)
    logger.resume(3, None)  # a checkpoint from before the logger kept a state
    logger.log({"train/loss": 4.5}, 4)
    assert [(r["step"], r["train/loss"]) for r in jsonl(tmp_path)] == [
        (1, 1),
        (2, 2),
        (3, 3),
        (3, 3),
        (4, 4.5),
    ]
    assert "continues at step 3; dropped 3 record(s) of later steps" in caplog.text


# ---- what the dashboard shows; nothing else changes ----------------------------------------------------------
def test_dashboard_content_and_the_run_is_the_same_without_wandb(tiny_cfg, tmp_path, offline, monkeypatch):
    """Per-class tables at each evaluation, the best and last val mIoU with their steps, every group's lr, the
    non-finite counter; the weights and ``metrics.jsonl`` (but for times) equal those of ``logger=local``."""
    real_forward = SourceOnly.forward

    def nan_at_step_2(self, batch, step, backward):
        def poisoned(name, loss, **kwargs):
            backward(name, loss * float("nan"), **kwargs)

        return real_forward(self, batch, step, poisoned if step == 1 else backward)

    monkeypatch.setattr(SourceOnly, "forward", nan_at_step_2)
    common = ["trainer.max_steps=4", "trainer.eval_every=2"]
    run(tiny_cfg(*common, n_train=4, n_val=2), tmp_path / "local")
    run(tiny_cfg(*common, "logger=wandb", n_train=4, n_val=2), tmp_path / "wandb")

    assert_bit_equal(*(weights(tmp_path / d / "checkpoints" / "last.pt") for d in ("local", "wandb")))
    assert without_times(jsonl(tmp_path / "local")) == without_times(jsonl(tmp_path / "wandb"))
    assert not (tmp_path / "local" / "wandb").exists()

    (dash,) = offline_runs(tmp_path / "wandb")
    assert logged_steps([dash], "val/per_class.path") == [2, 4]
    table = json.loads((dash.folder / "files" / dash.history[-1]["val/per_class.path"]).read_text())
    final = json.loads((tmp_path / "wandb" / "eval_0000004.json").read_text())
    assert table["columns"] == ["set", "class", "IoU"]
    assert table["data"] == [[s, c, iou] for s, r in final.items() for c, iou in r["per_class"].items()]
    evals = {s: json.loads((tmp_path / "wandb" / f"eval_{s:07d}.json").read_text()) for s in (2, 4)}
    best = max((2, 4), key=lambda s: (evals[s]["target"]["mIoU"], -s))
    assert dash.summary["best/val/target/mIoU"] == evals[best]["target"]["mIoU"]
    assert dash.summary["best/val/target/mIoU_step"] == best
    assert dash.summary["last/val/target/mIoU"] == final["target"]["mIoU"]
    assert dash.summary["last/val/target/mIoU_step"] == 4
    assert [row["train/nonfinite_steps"] for row in dash.history if "train/loss" in row] == [0, 1, 1, 1]
    lrs = {k for row in dash.history for k in row if k.startswith("train/lr/")}
    assert lrs == {f"train/lr/{part}_{kind}" for part in ("backbone", "head") for kind in ("weight", "bias")}

    # refign.evaluate logger=wandb: a run of job type "evaluate" with the checkpoint's mIoU
    ckpt = f"checkpoint={tmp_path / 'wandb' / 'checkpoints' / 'last.pt'}"
    evaluate.run(
        compose_cfg([*tiny_overrides(tmp_path, 4, 2), ckpt, "logger=wandb"], "eval"), tmp_path / "eval"
    )
    (evaluation,) = offline_runs(tmp_path / "eval")
    assert evaluation.run.job_type == "evaluate"
    assert evaluation.summary["last/val/target/mIoU"] == final["target"]["mIoU"]


# ---- the scripts' tables -----------------------------------------------------------------------------------
def table_run(folder: Path, key: str) -> tuple[OfflineRun, dict]:
    (table_run,) = offline_runs(folder)
    return table_run, json.loads(
        (table_run.folder / "files" / table_run.history[0][f"{key}.path"]).read_text()
    )


def test_table_scripts_log_their_table_as_a_wandb_run(tmp_path, offline, monkeypatch):
    """``scripts/bench_refign.py`` (through ``scripts/benchmark.py``) and ``scripts/ablation_table.py`` with
    ``--wandb``: a ``table`` run whose table has the Markdown table's cells; the ablation table joins the
    sweep's group."""
    result = {
        "source": {"mIoU": 50.0},
        "target": {"mIoU": 40.0, "per_condition": {"fog": 30.0, "night": 20.0}},
    }
    for point, row in enumerate(["row1", "row2"]):
        run_dir = tmp_path / "sweep" / f"{point}_x"
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "config.yaml").write_text("{}\n")
        (run_dir / ".hydra" / "overrides.yaml").write_text(f"- refign=on\n- +ablation={row}\n")
        (run_dir / "eval_0000004.json").write_text(json.dumps(result))
        (run_dir / RUN_FILE).write_text(json.dumps({"id": f"r{point}", "group": "ablation-2026"}))
    ablation_table.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "t.md"), "--wandb"])
    ablation, table = table_run(tmp_path, "ablation")
    assert (ablation.run.job_type, ablation.run.run_group) == ("table", "ablation-2026")
    markdown = (tmp_path / "t.md").read_text().splitlines()
    assert table["columns"] == [c.strip() for c in markdown[0].strip("|").split("|")]
    assert table["data"] == [[c.strip() for c in line.strip("|").split("|")] for line in markdown[2:]]

    bench = tmp_path / "bench"
    for seed in (0, 1):
        (bench / "daformer" / f"seed{seed}").mkdir(parents=True)
        (bench / "daformer" / f"seed{seed}" / "eval_0000004.json").write_text(json.dumps(result))
    # finished runs are not repeated: the script only makes the table
    argv = ["bench_refign.py", "--rows", "daformer", "--seeds", "0", "1", "--out", str(bench), "--wandb"]
    monkeypatch.setattr("sys.argv", argv)
    bench_refign.main()
    bench_run, table = table_run(bench, "bench")
    assert bench_run.run.job_type == "table" and table["data"][0][:3] == [
        "daformer",
        "50.0 ± 0.0",
        "40.0 ± 0.0",
    ]


@pytest.mark.slow
def test_the_readme_ablation_sweep_with_wandb_and_its_table(tmp_path, offline):
    """The README's ablation commands as written, plus ``logger=wandb`` and ``--wandb``, at a micro scale
    (one step per point): 18 runs in 6 ablation rows × 3 seeds, one group, and the table run in it."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"OMP_NUM_THREADS=1 python (-m refign.train -m .*?)#", readme.replace("\\\n", " "))
    words = shlex.split(command[1])[2:]  # after "-m refign.train": the sweep's "-m" and overrides
    assert "python -m scripts.ablation_table outputs/ablation/multirun/<date>" in readme
    sweep_dir = tmp_path / "sweep"
    # the data, steps and network made micro; the method (DAFormer + Refign) is the README's, with the
    # ground-truth flow for the matcher
    micro = [o for o in tiny_overrides(tmp_path, n_train=2, n_val=1) if not o.startswith(("uda=", "refign="))]
    micro += [
        "alignment=oracle",
        *MICRO,
        "trainer.max_steps=1",
        "logger=wandb",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    finish(train_cli(*words, *micro, log=tmp_path / "sweep.log"))
    points = sorted(sweep_dir.glob("*_*"))
    assert len(points) == 18
    runs = [offline_runs(p)[0].run for p in points]
    assert {r.run_group for r in runs} == {f"ablation-{sweep_dir.name}"}
    assert len({r.display_name for r in runs}) == 18
    ablation_table.main([str(sweep_dir), "--wandb"])
    table, _ = table_run(sweep_dir, "ablation")
    assert table.run.run_group == f"ablation-{sweep_dir.name}"
