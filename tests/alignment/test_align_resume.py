"""``refign.align_train`` on the engine: an interrupted matcher training resumed with resume=auto reaches
exactly the weights of an uninterrupted one, and its checkpoints keep the matcher's own key names."""

from __future__ import annotations

import torch

from refign.align_train import run
from refign.alignment.network import BACKBONE_PREFIX, HEAD_PREFIX
from refign.engine.checkpoint import load
from refign.models.weights import read_state_dict
from tests.alignment.test_align_train import align_cfg
from tests.methods import interrupted_at_step

TINY = [
    "pairs.train.size=[32,64]",
    "pairs.train.num_images=4",
    "pairs.eval.num_images=1",
    "trainer.max_steps=4",
    "trainer.checkpoint_every=2",
    "pairs.batch_size=2",
    "seed=3",
]


def test_interrupted_and_resumed_matcher_training_equals_uninterrupted(tmp_path, monkeypatch):
    straight = run(
        align_cfg(tmp_path, *TINY, "task_name=straight"), tmp_path / "out" / "straight" / "runs" / "a"
    )

    first_dir = tmp_path / "out" / "resumed" / "runs" / "first"
    with interrupted_at_step(monkeypatch, 3):  # the checkpoint of step 2 exists; step 3 never completes
        run(align_cfg(tmp_path, *TINY, "task_name=resumed"), first_dir)
    assert load(first_dir / "checkpoints" / "last.pt")["step"] == 2

    resumed = run(align_cfg(tmp_path, *TINY, "task_name=resumed", "resume=auto"), tmp_path / "second")
    # resume=auto continues in the interrupted run's directory
    assert resumed["checkpoint"] == str(first_dir / "checkpoints" / "last.pt")
    a, b = load(straight["checkpoint"]), load(resumed["checkpoint"])
    assert a["step"] == b["step"] == 4 and a["stage"] == b["stage"] == 1
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    moments = lambda s: [
        t for st in s["optimizer"]["state"].values() for t in st.values() if torch.is_tensor(t)
    ]
    assert all(torch.equal(x, y) for x, y in zip(moments(a), moments(b), strict=True))
    assert resumed["pck5"] == straight["pck5"]


def test_matcher_checkpoint_keeps_the_official_key_names_and_logs_the_losses(tmp_path):
    out = run(align_cfg(tmp_path, *TINY, "trainer.max_steps=2"), tmp_path / "run")
    state = read_state_dict(out["checkpoint"])  # what alignment.checkpoint=<file> reads
    assert state and all(k.startswith((HEAD_PREFIX, BACKBONE_PREFIX)) for k in state)
    saved = load(out["checkpoint"])
    assert saved["segmentor_prefix"] == "network"
    assert saved["segmentor"].keys() == saved["state_dict"].keys()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert any('"train/loss_warpc"' in line and '"train/ss"' in line for line in lines)
    assert any('"val/synthetic/pck5"' in line for line in lines)
    assert (tmp_path / "run" / "eval_0000002.json").is_file()
