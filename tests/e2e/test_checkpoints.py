"""Checkpoints keep inference weights apart from training state, and the frozen matcher out of them: the
size with Refign, resuming against the matcher's file, the teacher as inference network, and checkpoints
of the earlier format."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from refign import evaluate
from refign.engine import checkpoint
from refign.models.weights import CheckpointError, read_state_dict
from refign.train import run
from refign.uda.dacs import DACS
from scripts.convert_checkpoint import main as convert_main
from tests.conftest import build_matcher, compose_cfg, save_matcher
from tests.e2e.conftest import STEP, SYNTHETIC, paths
from tests.uda.conftest import tiny_segmentor, uda_kwargs

# Refign on, but every step adapts on the reference images: the matcher is built, never run (cheap)
ON_CHEAP = ["refign=on", "refine.adapt_to_ref=true", "refine.adapt_to_ref_p=1.0"]


def train_one_step(tmp: Path, *overrides: str) -> tuple[dict, Path]:
    cfg = compose_cfg([*paths(tmp), *SYNTHETIC, *STEP, "uda=daformer", "model=segmentor", *overrides])
    return run(cfg, tmp / "run"), tmp / "run" / "checkpoints" / checkpoint.LAST


@pytest.fixture(scope="module")
def refign_run(tmp_path_factory, matcher_file) -> tuple[dict, Path]:
    """One DAFormer + Refign step (MiT-b0): its validation results and checkpoint."""
    return train_one_step(
        tmp_path_factory.mktemp("refign_run"), *ON_CHEAP, f"alignment.checkpoint={matcher_file}"
    )


def test_refign_checkpoint_is_not_bigger_than_without_refign(tmp_path, refign_run):
    _, off = train_one_step(tmp_path, "refign=off")
    on = refign_run[1]
    assert on.stat().st_size <= 1.2 * off.stat().st_size
    with_refign, without = checkpoint.load(on), checkpoint.load(off)
    assert set(with_refign["method"]) == set(without["method"])  # teacher, ImageNet copy, counters
    assert set(with_refign["segmentor"]) == set(without["segmentor"])


def resume_cfg(tmp: Path, ckpt: Path, *overrides: str):
    return compose_cfg(
        [*paths(tmp), *SYNTHETIC, *STEP, "uda=daformer", "model=segmentor", f"resume={ckpt}", *overrides]
    )


def test_resume_rebuilds_the_matcher_from_its_file_and_refuses_another(tmp_path, refign_run, matcher_file):
    ckpt = tmp_path / "copy" / "checkpoints" / checkpoint.LAST
    ckpt.parent.mkdir(parents=True)
    shutil.copy(refign_run[1], ckpt)
    other = save_matcher(tmp_path / "other.ckpt", seed=5)
    with pytest.raises(CheckpointError, match="pseudo_labeler.aligner built from .*other.ckpt differs"):
        run(resume_cfg(tmp_path, ckpt, *ON_CHEAP, f"alignment.checkpoint={other}"), tmp_path / "x")
    with pytest.raises(CheckpointError, match="resume with the configuration of the run"):
        run(resume_cfg(tmp_path, ckpt, "refign=off"), tmp_path / "x")
    # the same weights in another file and container: the fingerprint is of the weights, so it resumes
    moved = tmp_path / "moved.pt"
    torch.save(read_state_dict(matcher_file), moved)
    run(
        resume_cfg(tmp_path, ckpt, *ON_CHEAP, f"alignment.checkpoint={moved}", "trainer.max_steps=2"),
        tmp_path / "x",
    )
    resumed = checkpoint.load(ckpt)
    assert resumed["step"] == 2
    assert resumed["rebuilt"]["pseudo_labeler.aligner"]["source"] == f"alignment.checkpoint={moved}"
    expected = checkpoint.fingerprint(build_matcher(checkpoint=str(matcher_file)))
    assert resumed["rebuilt"]["pseudo_labeler.aligner"]["sha256"] == expected


def test_teacher_as_inference_network_is_stored_as_the_segmentor():
    torch.manual_seed(0)
    method = DACS(tiny_segmentor(), **uda_kwargs("dacs", eval_teacher=True))
    for p in method.teacher.parameters():
        p.data.normal_()  # teacher ≠ student
    entries = checkpoint.method_entries(method, {})
    assert entries["segmentor_prefix"] == "teacher.model"
    for key, value in method.teacher.model.state_dict().items():
        assert torch.equal(entries["segmentor"][key], value)
    restored = checkpoint.method_state(entries)
    assert restored.keys() == method.state_dict().keys()
    assert all(torch.equal(restored[k], v) for k, v in method.state_dict().items())


def legacy_file(state: dict, matcher_file: str, path: Path) -> Path:
    """What the earlier trainer wrote: the whole method, matcher included, under ``model``."""
    aligner = build_matcher(checkpoint=matcher_file).state_dict()
    model = checkpoint.method_state(state) | {f"pseudo_labeler.aligner.{k}": v for k, v in aligner.items()}
    kept = ("optimizer", "scheduler", "scaler", "step", "rng", "config")
    path.parent.mkdir(parents=True)
    torch.save({**{k: state[k] for k in kept}, "model": model}, path)
    return path


def test_checkpoint_of_the_earlier_format_is_refused_with_the_conversion_then_converts(
    tmp_path, refign_run, matcher_file, caplog
):
    trained, ckpt = refign_run
    old = legacy_file(checkpoint.load(ckpt), matcher_file, tmp_path / "old" / "checkpoints" / "last.pt")
    common = [*paths(tmp_path), *SYNTHETIC, "trainer.device=cpu"]
    with pytest.raises(CheckpointError, match=rf"earlier refign version.*convert_checkpoint.py legacy {old}"):
        evaluate.run(compose_cfg([*common, f"checkpoint={old}"], "eval"), tmp_path / "e")
    new = tmp_path / "new" / "checkpoints" / "last.pt"
    convert_main(["legacy", str(old), str(new)])
    assert evaluate.run(compose_cfg([*common, f"checkpoint={new}"], "eval"), tmp_path / "e") == trained
    converted = checkpoint.load(new)
    assert converted["rebuilt"] is None and not any("aligner" in k for k in converted["method"])
    with caplog.at_level(logging.WARNING):
        run(
            resume_cfg(
                tmp_path, new, *ON_CHEAP, f"alignment.checkpoint={matcher_file}", "trainer.max_steps=2"
            ),
            tmp_path / "x",
        )
    assert "records no fingerprints" in caplog.text and checkpoint.load(new)["step"] == 2
