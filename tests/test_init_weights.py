"""``init_weights``: the whole segmentor (backbone + head) starts from a file, for the student, the EMA teacher
and DAFormer's frozen copy alike; a file that does not fit is refused with the keys at fault."""

from __future__ import annotations

import pytest
import torch

from refign import build
from refign.engine import checkpoint
from refign.models.weights import CheckpointError
from refign.train import run


def saved_segmentor(cfg, path) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    state = build.build_segmentor(cfg).state_dict()
    torch.save(state, path)
    return state


def test_every_tensor_reaches_student_teacher_and_frozen_copy(tiny_cfg, tmp_path):
    path = tmp_path / "segmentor.pt"
    state = saved_segmentor(tiny_cfg("uda=source_only", "refign=off"), path)
    torch.manual_seed(0)
    method = build.build_method(tiny_cfg("uda=daformer", "refign=off", f"init_weights={path}"))
    for name, module in (
        ("student", method.model),
        ("teacher", method.teacher.model),
    ):
        got = module.state_dict()
        assert set(got) == set(state), name
        for k, v in state.items():
            torch.testing.assert_close(got[k], v, msg=f"{name}: {k}")
    frozen = method.imnet_backbone.state_dict()
    for k, v in frozen.items():
        torch.testing.assert_close(v, state[f"backbone.{k}"])


def test_a_training_checkpoint_initialises_from_its_inference_network(tiny_cfg, tmp_path):
    run(tiny_cfg("uda=source_only", "refign=off", "trainer.max_steps=1", n_train=4, n_val=2), tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.pt"
    trained = checkpoint.segmentor_state(checkpoint.load(ckpt), str(ckpt))
    segmentor = build.build_segmentor(tiny_cfg("uda=source_only", "refign=off", f"init_weights={ckpt}"))
    assert set(segmentor.state_dict()) == set(trained)
    for k, v in trained.items():
        torch.testing.assert_close(segmentor.state_dict()[k], v)


def test_hrda_keeps_its_fresh_scale_attention(tiny_cfg, tmp_path):
    path = tmp_path / "segmentor.pt"
    state = saved_segmentor(tiny_cfg("uda=source_only", "refign=off"), path)
    hrda = build.build_segmentor(tiny_cfg("uda=hrda", "refign=off", f"init_weights={path}"))
    loaded = hrda.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert any(k.startswith("scale_attention.") for k in loaded)


def test_a_file_that_does_not_fit_names_the_keys(tiny_cfg, tmp_path):
    path = tmp_path / "segmentor.pt"
    state = saved_segmentor(tiny_cfg("uda=source_only", "refign=off"), path)
    head_key = next(k for k in state if k.startswith("head."))
    del state[head_key]
    state["head.extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        build.build_segmentor(tiny_cfg("uda=source_only", "refign=off", f"init_weights={path}"))
    msg = str(err.value)
    assert str(path) in msg and head_key in msg and "head.extra.weight" in msg
    with pytest.raises(CheckpointError, match="not found"):
        build.build_segmentor(tiny_cfg("uda=source_only", "refign=off", f"init_weights={tmp_path}/none.pt"))
