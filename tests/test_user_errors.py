"""A user's error reaches them as one line naming the key or file, exit status 2, nothing written; the full
traceback under ``HYDRA_FULL_ERROR=1`` (refign/task.py, docs/running.md#errors)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from refign.build import build_segmentor
from refign.models.weights import CheckpointError
from refign.task import EXIT_USER_ERROR
from refign.train import run
from refign.utils.errors import ConfigError
from tests.conftest import compose_cfg, tiny_overrides
from tests.data import trees

ROOT = Path(__file__).resolve().parents[1]
HINT = "(HYDRA_FULL_ERROR=1 shows the full traceback)"
ENTRY_POINTS = ("train", "evaluate", "predict", "align", "align_train", "check_data", "estimate")


def cli(module: str, args: list[str], monkeypatch, capsys) -> tuple[int, list[str]]:
    """``python -m refign.<module> ARGS`` in this process: (exit status, stderr lines). Hydra's logging is
    left alone, and its global state cleared afterwards, so that the tests after this one compose as usual."""
    monkeypatch.setattr(sys, "argv", [module, *args, "hydra/job_logging=none", "hydra/hydra_logging=none"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    try:
        with pytest.raises(SystemExit) as done:
            # an entry module's main, or a package's (``refign.estimate``: its ``__main__``)
            entry = importlib.import_module(f"refign.{module}")
            main = getattr(entry, "main", None) or importlib.import_module(f"refign.{module}.__main__").main
            main()
    finally:
        GlobalHydra.instance().clear()
    return done.value.code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    "override,line",
    [
        ("trainer.max_steps=-5", "trainer.max_steps=-5: must be a whole number > 0"),
        ("trainer.checkpoint_every=-3", "trainer.checkpoint_every=-3: must be a whole number >= 0"),
        ("trainer.log_every=-1", "trainer.log_every=-1: must be a whole number >= 0"),
        ("trainer.eval_every=-1", "trainer.eval_every=-1: must be a whole number >= 0"),
        ("trainer.image_every=2.5", "trainer.image_every=2.5: must be a whole number >= 0"),
        ("trainer.eval_batch_size=0", "trainer.eval_batch_size=0: must be a whole number > 0"),
        ("optim.lr=abc", "optim.lr='abc': must be a number > 0"),
        ("optim.lr=0", "optim.lr=0: must be a number > 0"),
        ("optim.weight_decay=-0.1", "optim.weight_decay=-0.1: must be a number >= 0"),
        ("dataset.batch_size=0", "dataset.batch_size=0: must be a whole number > 0"),
    ],
)
def test_a_bad_number_is_refused_naming_its_key_before_anything_is_written(tmp_path, override, line):
    cfg = compose_cfg([*tiny_overrides(tmp_path), override])
    with pytest.raises(ConfigError) as err:
        run(cfg, tmp_path / "run")
    assert str(err.value) == line
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file()]  # no checkpoint, no metrics.jsonl


def test_entry_point_prints_one_line_exits_2_and_writes_no_checkpoint(tmp_path, monkeypatch, capsys):
    args = [*tiny_overrides(tmp_path), "trainer.max_steps=-5", f"hydra.run.dir={tmp_path / 'run'}"]
    code, err = cli("train", args, monkeypatch, capsys)
    assert code == EXIT_USER_ERROR == 2
    assert err == ["refign.train: error: trainer.max_steps=-5: must be a whole number > 0", HINT]
    assert not list(tmp_path.rglob("*.pt"))


def test_the_debug_flag_shows_the_error_itself(tmp_path, monkeypatch):
    argv = ["train", *tiny_overrides(tmp_path), "trainer.max_steps=-5", f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", [*argv, "hydra/job_logging=none", "hydra/hydra_logging=none"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    try:
        with pytest.raises(ConfigError, match="trainer.max_steps=-5"):
            importlib.import_module("refign.train").main()
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_entry_point_reports_an_unknown_key_in_one_line(module, tmp_path, monkeypatch, capsys):
    code, err = cli(module, ["trainer.max_stepz=3", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    assert code == 2
    assert err == [
        f"refign.{module}: error: Could not override 'trainer.max_stepz'. To append to your config use "
        "+trainer.max_stepz=3 (Key 'max_stepz' is not in struct (key trainer.max_stepz))",
        HINT,
    ]


@pytest.mark.parametrize(
    "module,override",
    [
        ("align_train", "dataset.batch_size=2"),
        ("align_train", "align_data=megadepth"),
        ("check_data", "align_data=x"),
    ],
)
def test_an_override_of_a_renamed_key_names_the_new_one(module, override, tmp_path, monkeypatch, capsys):
    """The matcher's data moved from ``dataset`` (``align_data=…``) to ``pairs``: the old spelling is refused,
    and the line names the new key rather than only suggesting to add the old one with ``+``."""
    code, err = cli(module, [override, f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    key = override.split("=")[0]
    assert code == 2 and err[0].startswith(f"refign.{module}: error: Could not override '{key}'")
    assert err[0].endswith(f"('{key.split('.')[0]}' is now 'pairs')")


@pytest.mark.parametrize(
    "args,line",
    [
        (["checkpoint={tmp}/none.pt"], "checkpoint not found: {tmp}/none.pt"),
        ([], "Missing mandatory value: checkpoint (key checkpoint)"),
    ],
)
def test_a_missing_file_or_value_is_one_line(args, line, tmp_path, monkeypatch, capsys):
    args = [a.format(tmp=tmp_path) for a in args]
    code, err = cli(
        "evaluate", [*args, "trainer.device=cpu", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys
    )
    assert (code, err) == (2, [f"refign.evaluate: error: {line.format(tmp=tmp_path)}", HINT])


def test_a_stage_the_pairs_schedule_lacks_is_one_line(tmp_path, monkeypatch, capsys):
    """The synthetic pairs train in one stage: stage=2 says so (it was an interpolation error on
    ``stages.stage2.lr``) and writes nothing."""
    code, err = cli("align_train", ["stage=2", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    assert code == 2 and err[0].startswith(
        "refign.align_train: error: stage=2: the schedule of pairs=synthetic"
    )
    assert "has stage1 only" in err[0] and not (tmp_path / "checkpoints").exists()


def test_an_unknown_group_option_lists_the_options(tmp_path, monkeypatch, capsys):
    code, err = cli("train", ["dataset=acdcx", f"hydra.run.dir={tmp_path}"], monkeypatch, capsys)
    assert (code, err[1:]) == (2, [HINT])
    assert err[0] == (
        "refign.train: error: In 'train': Could not find 'dataset/acdcx' "
        "(available: acdc, dark_zurich, robotcar, synthetic)"
    )


def test_a_corrupt_image_read_by_a_worker_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """Cityscapes → ACDC at the CPU scale (``scale=synthetic``), every source image corrupt, read by a
    DataLoader worker process: the worker's traceback stays out of the line."""
    data = tmp_path / "data"
    trees.acdc(data / "ACDC")
    city = trees.cityscapes(data / "Cityscapes")
    for image in city.glob("leftImg8bit/train/*/*.png"):
        image.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = [
        "dataset=acdc",
        "scale=synthetic",
        "uda=source_only",
        "refign=off",
        f"paths.data_root={data}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        "trainer.num_workers=1",
        "trainer.device=cpu",
    ]
    code, err = cli("train", args, monkeypatch, capsys)
    assert code == 2 and err[-1] == HINT and err[-3].startswith("train:   0%")  # the bar, then the line
    corrupt = city.glob("leftImg8bit/train/*/*.png")
    named = [p for p in corrupt if err[-2].startswith(f"refign.train: error: cannot read image {p}: ")]
    assert len(named) == 1 and "Traceback" not in err[-2]
    assert not list(tmp_path.rglob("*.pt"))


def test_a_missing_init_weights_file_is_called_missing(tmp_path):
    missing = tmp_path / "nowhere" / "segmentor.pt"
    cfg = compose_cfg([*tiny_overrides(tmp_path), f"init_weights={missing}"])
    with pytest.raises(CheckpointError) as err:
        build_segmentor(cfg)
    assert str(err.value) == f"init_weights: weight file not found: {missing}"


@pytest.mark.parametrize("scale", ["synthetic", "paper", "robotcar"])
@pytest.mark.parametrize("dataset", ["synthetic", "acdc", "dark_zurich", "robotcar"])
def test_every_scale_composes_with_every_dataset(dataset, scale):
    """``scale=…`` overrides the dataset's own (conf/train.yaml): with the synthetic scale a paper dataset
    loads at its native size (its ``dims`` null), which an InterpolationKeyError refused before. Every scale
    sets what the groups leave to it (``???``: steps, cadences, warm-up, MIC's blocks …)."""
    cfg = compose_cfg([f"dataset={dataset}", f"scale={scale}"])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if dataset != "synthetic":
        expected = {
            "synthetic": (None, None),
            "paper": ([512, 1024], [540, 960]),
            "robotcar": ([512, 1024], [720, 720]),
        }
        data = resolved["dataset"]
        assert (data["train_source"]["dims"], data["train_target"]["dims"]) == expected[scale]


@pytest.mark.slow
def test_python_m_refign_train_exits_2_with_one_line(tmp_path):
    """The real command line: the module run as ``__main__``, its log named after it (train.log)."""
    cmd = [sys.executable, "-m", "refign.train", *tiny_overrides(tmp_path), "optim.lr=abc"]
    cmd.append(f"hydra.run.dir={tmp_path / 'run'}")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    done = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines()[-2:] == [
        "refign.train: error: optim.lr='abc': must be a number > 0",
        HINT,
    ]
    assert (tmp_path / "run" / "train.log").is_file() and not list(tmp_path.rglob("*.pt"))
