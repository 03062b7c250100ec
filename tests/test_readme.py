"""Every command of the README does what it says, as far as start-up goes (issue 20).

The commands are read from the README's ``bash`` blocks, so a command added there is checked without touching
this file. Each ``python -m refign.<entry>`` line is composed with its entry point's configuration (a ``-m``
sweep: its first and its last point) and passed through what a real run does before its first step: the
method, its pseudo-labeler and matcher, the training and validation sets (``refign.train``); the split's
datasets (``refign.evaluate``, ``refign.predict``); the matcher (``refign.align_train``). Lines that need real
data read fixture trees in the real layouts (``tests/data/trees.py``) through ``$REFIGN_DATA_DIR``, and the
files under ``pretrained_models/`` they name are written here (random weights of the right layout). Paper-scale
models are built with a tiny MiT of the same architecture. ``make X`` must name a Makefile target, and
``python -m scripts.X ARGS`` must be accepted by the script's own argument parser (parsed, not run).
"""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from refign import build
from refign.alignment.oracle import GroundTruthFlow
from refign.models.backbones import mit
from refign.refine.pseudo_labeler import RefignPseudoLabeler
from refign.uda.hrda import HRDA
from refign.uda.mic import MaskedImageConsistency
from tests.conftest import compose_cfg, save_matcher
from tests.data import trees

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIG_OF_ENTRY = {
    "train": "train",
    "evaluate": "eval",
    "predict": "predict",
    "align_train": "align_train",
    "check_data": "check_data",
    "align": "align",
    "estimate": "estimate",
}
PLACEHOLDER = re.compile(r"<[^<>]+>")  # <date>, <run>: parts of a path the user fills in
# the MiT of the paper scale, shrunk (same stages and heads); the DAFormer head and HRDA's attention narrowed
TINY_MIT = dict(embed_dims=8, num_layers=[1, 1, 1, 1], num_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1])
TINY_PAPER = [
    *(f"backbone.{k}={v}".replace(" ", "") for k, v in TINY_MIT.items()),
    "head.channels=16",
    "head.embed_dims=16",
    "dataset.source_dims=[64,128]",
    "dataset.target_dims=[64,128]",
    "dataset.crop_size=[64,64]",
    "dataset.rcs.min_pixels=1",
]
TINY_HRDA = ["model.attention_channels=16", "model.crop_size=[64,64]", "model.stride=[32,32]"]
# the synthetic benchmark's data, shrunk: two generated images per set, in the shared test cache
TINY_SYNTHETIC = [
    "dataset.train_source.num_images=2",
    "dataset.train_target.num_images=2",
    "dataset.val.source.num_images=2",
    "dataset.val.target.num_images=2",
    "dataset.test.target.num_images=2",
]


@dataclass(frozen=True)
class Command:
    """One command line of the README: its text (the test's id) and its words, comment and variables removed."""

    text: str
    argv: tuple[str, ...]


def readme_commands() -> list[Command]:
    """The commands of the README's ``bash`` blocks: continuation lines joined, ``a && b`` split in two,
    leading ``VAR=value`` assignments dropped (they set the environment, not the command)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                argv = words[:cut]
                while argv and re.fullmatch(r"[A-Z_]+=\S*", argv[0]):
                    argv = argv[1:]
                if argv:
                    found.append(Command(" ".join(argv), tuple(argv)))
                words = words[cut + 1 :]
    return found


COMMANDS = readme_commands()


def by_kind(kind: str) -> list[Command]:
    """The commands of one form: ``refign`` (python -m refign.X), ``script``, ``make``, ``export``."""
    forms = {
        "refign": lambda a: a[:2] == ("python", "-m") and a[2].startswith("refign."),
        "script": lambda a: a[:2] == ("python", "-m") and a[2].startswith("scripts."),
        "make": lambda a: a[0] == "make",
        "export": lambda a: a[0] == "export",
    }
    return [c for c in COMMANDS if forms[kind](c.argv)]


def ids(commands: list[Command]) -> list[str]:
    return [c.text[:120] for c in commands]


def test_every_readme_command_has_a_known_form():
    """A command this file cannot check is one nobody checks: each must be one of the forms above."""
    known = {c for kind in ("refign", "script", "make", "export") for c in by_kind(kind)}
    assert [c.text for c in COMMANDS if c not in known] == []


def test_the_set_up_commands_come_first():
    assert [c.text for c in COMMANDS[:3]] == ["make install", "make demo", "make test"]


def sweep_points(overrides: list[str]) -> list[list[str]]:
    """The first and the last point of a ``-m`` sweep (Hydra's own override grammar decides what sweeps)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    first, last = [], []
    for override in parsed:
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
            key = override.get_key_element()
            first.append(f"{key}={values[0]}")
            last.append(f"{key}={values[-1]}")
        else:
            first.append(override.input_line)
            last.append(override.input_line)
    return [first, last] if first != last else [first]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A working directory as the README's user has it: the data trees under ``data/`` (``$REFIGN_DATA_DIR``)
    and the files the commands name under ``pretrained_models/``."""
    root = tmp_path_factory.mktemp("readme")
    data = root / "data"
    trees.cityscapes_to_acdc_and_dark_zurich(data)
    weights = root / "pretrained_models"
    weights.mkdir()
    torch.manual_seed(0)
    backbone = mit(**TINY_MIT, mlp_ratio=4, drop_path_rate=0.0).state_dict()
    torch.save(backbone, weights / "mit_b5_mmseg.pth")  # converted ImageNet MiT: mmseg names
    torch.save(
        {"state_dict": {f"backbone.{k}": v for k, v in backbone.items()}},
        weights / "segformer_b5_city_mmseg.pth",
    )
    save_matcher(weights / "uawarpc_megadepth.ckpt", seed=1, small=False)  # the released matcher's layout
    return root


def compose_point(entry: str, point: list[str], workspace: Path, monkeypatch) -> DictConfig:
    """The configuration a README command composes, run from ``workspace``, with sizes shrunk."""
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("REFIGN_DATA_DIR", str(workspace / "data"))
    where = [
        f"paths.output_dir={workspace}/outputs",
        f"paths.cache_dir={workspace.parent}/synthetic_cache",
        f"paths.pretrained_dir={workspace}/pretrained_models",
    ]
    cfg = compose_cfg([*point, *where], CONFIG_OF_ENTRY[entry])
    # shrunk after composition, as command-line overrides would be (struct mode: no new keys)
    if entry in ("train", "evaluate", "predict"):
        shrink = TINY_SYNTHETIC if cfg.dataset.name == "synthetic" else TINY_PAPER
        if cfg.model._target_.endswith("HRDASegmentor") and cfg.dataset.name != "synthetic":
            shrink = [*shrink, *TINY_HRDA]
        cfg.merge_with_dotlist(shrink)
    return cfg


def check_training(cfg: DictConfig, point: list[str]) -> None:
    """Build what ``refign.train`` builds before its first step, and check that the words of the command took
    effect: Refign unless ``refign=off``, a method without pseudo-labels or an experiment without it; MIC with
    ``mic=on`` or a MIC experiment; HRDA with ``uda=hrda`` or an HRDA experiment; the ground-truth flow with
    ``alignment=oracle``."""
    method = build.build_method(cfg)
    source, target = build.build_train_sets(cfg)
    assert len(source) > 0 and build.build_datasets(cfg, "val")
    words = " ".join(point)
    experiment = re.search(r"\bexperiment=(\S+)", words)
    if experiment:
        refign = "refign" in experiment[1] and "refign=off" not in words
    else:
        refign = "refign=off" not in words and "uda=source_only" not in words
    assert isinstance(getattr(method, "pseudo_labeler", None), RefignPseudoLabeler) is refign
    assert isinstance(method, HRDA) is bool(re.search(r"\buda=hrda|experiment=\S*hrda", words))
    mic = bool(re.search(r"\bmic=on|experiment=\S*mic", words))
    assert isinstance(getattr(method, "mic", None), MaskedImageConsistency) is mic
    if refign:
        assert "image_ref" in target[0]
    if "alignment=oracle" in words:
        assert isinstance(method.pseudo_labeler.aligner, GroundTruthFlow) and "flow" in target[0]


def check_inference(cfg: DictConfig, entry: str) -> None:
    """``refign.evaluate`` and ``refign.predict`` rebuild the network from the checkpoint, then read a split:
    the split must have datasets on the user's data, and a checkpoint of a training run must lie where
    ``refign.train`` writes its runs."""
    split = cfg.split if entry == "evaluate" else "predict"
    if not cfg.get("input"):  # predict input=…: the user's own files
        datasets = build.build_datasets(cfg, split)
        assert datasets and all(len(d) > 0 for d in datasets.values()), f"no {split} data"
    ckpt = str(cfg.checkpoint)
    if "/runs/" in ckpt:
        train_runs = f"outputs/{compose_cfg([], 'train').task_name}/runs/"
        assert ckpt.startswith(train_runs) and ckpt.endswith("/checkpoints/last.pt"), ckpt


REFIGN_POINTS = [
    pytest.param(c, point, id=f"{c.text[:110]} [{i}]")
    for c in by_kind("refign")
    for i, point in enumerate(
        sweep_points([PLACEHOLDER.sub("x", a) for a in c.argv[3:] if a not in ("-m", "--multirun")])
    )
]


@pytest.mark.parametrize(("command", "point"), REFIGN_POINTS)
def test_refign_command_starts(command, point, workspace, monkeypatch):
    entry = command.argv[2].removeprefix("refign.")
    assert entry in CONFIG_OF_ENTRY, f"no entry point refign.{entry}"
    launcher = [w for w in point if w.startswith("hydra/launcher=")]
    # a sweep's launcher: its config must exist (it is read by Hydra, not composed here)
    for word in launcher:
        assert (ROOT / "conf" / f"{word.replace('=', '/')}.yaml").is_file(), word
    cfg = compose_point(entry, [w for w in point if w not in launcher], workspace, monkeypatch)
    if entry == "train":
        check_training(cfg, point)
    elif entry == "align_train":
        assert build.build_matcher(cfg) is not None
        if cfg.mode == "train":
            build.stage_cfg(cfg)
    elif (
        entry == "check_data"
    ):  # every folder it walks exists in the user's layout (the counts are the data's)
        for spec in build.dataset_specs(cfg):
            assert "root" not in spec or Path(spec.root).is_dir(), spec.root
    elif entry == "align":  # the matcher, and without target/reference the dataset's pairs
        build.build_aligner(cfg)
        assert cfg.target or build.build_pair_sets(cfg, cfg.split)
    elif entry == "estimate":  # the method it traces is a training one (the trace itself takes minutes)
        assert build.method_class(cfg).self_training and cfg.trainer.precision in (
            "auto16",
            "32",
            "bf16",
            "fp16",
        )
    else:
        check_inference(cfg, entry)


class Parsed(Exception):
    """Raised in place of running a script once its arguments were parsed."""


@pytest.mark.parametrize("command", by_kind("script"), ids=ids(by_kind("script")))
def test_script_accepts_its_arguments(command, workspace, monkeypatch):
    script = command.argv[2]
    assert (ROOT / f"{script.replace('.', '/')}.py").is_file(), script
    parse = argparse.ArgumentParser.parse_known_args
    depth = []

    def parse_then_stop(self, args=None, namespace=None):
        depth.append(self)  # sub-parsers parse inside their parent: stop only when the outermost returns
        try:
            result = parse(self, args, namespace)
        finally:
            depth.pop()
        if not depth:
            raise Parsed(result)
        return result

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", parse_then_stop)
    data = str(workspace / "data")
    argv = [PLACEHOLDER.sub("x", word).replace("$REFIGN_DATA_DIR", data) for word in command.argv[2:]]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(Parsed) as parsed:
        runpy.run_module(script, run_name="__main__")
    _, rest = parsed.value.args[0]
    rest = [word for word in rest if word != "--"]
    if (
        "--" in command.argv
    ):  # training overrides that describe a model (convert_checkpoint.py refign builds it)
        build.build_method(compose_point("train", rest, workspace, monkeypatch))
    else:
        assert rest == [], f"{script} does not take {rest}"


@pytest.mark.parametrize("command", by_kind("make"), ids=ids(by_kind("make")))
def test_make_target_exists(command):
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert set(command.argv[1:]) <= targets
