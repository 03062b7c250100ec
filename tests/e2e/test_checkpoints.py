"""Checkpoints keep inference weights apart from training state, and the frozen matcher out of them: the
size with Refign, resuming against the matcher's file, the teacher as inference network, and checkpoints
of the earlier format (evaluated, not resumed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from refign import evaluate
from refign.engine import checkpoint
from refign.models.weights import CheckpointError, fingerprint, read_state_dict
from refign.train import run
from refign.uda.dacs import DACS
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
    # teacher, ImageNet copy, counters; Refign adds only its matcher's fingerprint
    assert set(with_refign["method"]) == set(without["method"]) | {"pseudo_labeler._extra_state"}
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
    with pytest.raises(CheckpointError, match="aligner built from .*other.ckpt differs"):
        run(resume_cfg(tmp_path, ckpt, *ON_CHEAP, f"alignment.checkpoint={other}"), tmp_path / "x")
    with pytest.raises(CheckpointError, match="trained with another configuration: .*refign"):
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
    recorded = resumed["method"]["pseudo_labeler._extra_state"]["aligner"]
    assert recorded["source"] == f"alignment.checkpoint={moved}"
    assert recorded["sha256"] == fingerprint(build_matcher(checkpoint=str(matcher_file)))
    assert not any(k.startswith("pseudo_labeler.aligner.") for k in resumed["method"])  # rebuilt, not stored


def test_teacher_as_inference_network_is_stored_as_the_segmentor():
    torch.manual_seed(0)
    method = DACS(tiny_segmentor(), **uda_kwargs("dacs", eval_teacher=True))
    for p in method.teacher.parameters():
        p.data.normal_()  # teacher ≠ student
    entries = checkpoint.method_entries(method)
    assert entries["segmentor_prefix"] == "teacher.model"
    for key, value in method.teacher.model.state_dict().items():
        assert torch.equal(entries["segmentor"][key], value)
    restored = checkpoint.method_state(entries)
    assert restored.keys() == method.state_dict().keys()
    assert all(torch.equal(restored[k], v) for k, v in method.state_dict().items())


def test_checkpoint_of_the_earlier_format_evaluates_but_does_not_resume(tmp_path, refign_run, matcher_file):
    """Format 2 stored the segmentor as format 3 does (so it evaluates the same), but kept the matcher's
    fingerprint beside the method: resuming it is refused with a message naming the format."""
    trained, ckpt = refign_run
    old_state = checkpoint.load(ckpt) | {"format": 2}
    old = tmp_path / "old" / "checkpoints" / "last.pt"
    old.parent.mkdir(parents=True)
    torch.save(old_state, old)
    common = [*paths(tmp_path), *SYNTHETIC, "trainer.device=cpu"]
    assert evaluate.run(compose_cfg([*common, f"checkpoint={old}"], "eval"), tmp_path / "e") == trained
    with pytest.raises(CheckpointError, match=r"format-2 checkpoint, this version resumes format 3 only"):
        run(resume_cfg(tmp_path, old, *ON_CHEAP, f"alignment.checkpoint={matcher_file}"), tmp_path / "x")
