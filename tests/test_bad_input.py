"""Bad input gets an error that names the culprit; weights load from local files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from refign import evaluate
from refign.build import build_inference_model, build_segmentor
from refign.data.datasets.cityscapes import Cityscapes
from refign.data.io import DatasetError, load_image, load_label, require_dir
from refign.data.loader import step_loader
from refign.data.transforms import JointTransform
from refign.engine.dist import DistInfo
from refign.models.backbones import mit
from refign.models.weights import CheckpointError, load_backbone_weights
from refign.task import one_line
from refign.train import run
from tests.data import trees

B0 = dict(
    embed_dims=32,
    num_layers=[2, 2, 2, 2],
    num_heads=[1, 2, 5, 8],
    sr_ratios=[8, 4, 2, 1],
    mlp_ratio=4,
    drop_path_rate=0.0,
)


def test_pretrained_backbone_loads_from_a_local_file(tmp_path):
    donor = mit(**B0)
    path = tmp_path / "mit_b0.pth"
    state = {f"backbone.{k}": v for k, v in donor.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.zeros(19, 256, 1, 1)  # a full segmentor checkpoint
    torch.save({"state_dict": state}, path)
    model = mit(**B0, pretrained=str(path))
    for k, v in donor.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)


def test_checkpoint_with_wrong_keys_lists_them(tmp_path):
    model = mit(**B0)
    state = model.state_dict()
    state.pop("layers.0.0.projection.weight")
    state["layers.9.bogus"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_backbone_weights(model, path)
    msg = str(err.value)
    assert str(path) in msg and "layers.0.0.projection.weight" in msg and "layers.9.bogus" in msg
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone_weights(model, tmp_path / "missing.pth")


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "frame_000001_rgb_anon.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match="frame_000001_rgb_anon.png"):
        load_image(bad)
    with pytest.raises(DatasetError, match="not found"):
        load_label(tmp_path / "nope.png")
    with pytest.raises(DatasetError, match="ACDC/rgb_anon"):
        require_dir(tmp_path / "ACDC" / "rgb_anon", "ACDC images")


def test_image_resize_at_load(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((20, 40), 7, np.uint8)).save(tmp_path / "a_label.png")
    assert load_image(tmp_path / "a.png", (10, 20)).shape == (10, 20, 3)
    label = load_label(tmp_path / "a_label.png", (10, 20))
    assert label.shape == (10, 20) and set(np.unique(label)) == {7}


def test_evaluate_reproduces_the_training_evaluation(tiny_cfg, tmp_path):
    results = run(tiny_cfg("trainer.max_steps=3", n_train=8, n_val=6), tmp_path / "run")
    cfg = tiny_cfg(n_train=8, n_val=6)
    with open_dict(cfg):
        cfg.checkpoint = str(tmp_path / "run" / "checkpoints" / "last.pt")
        cfg.split = "val"
        cfg.use_checkpoint_config = True
    again = evaluate.run(cfg, tmp_path / "eval")
    assert again["target"]["mIoU"] == results["target"]["mIoU"]
    assert again["source"]["per_class"] == results["source"]["per_class"]
    assert (tmp_path / "eval" / "eval.json").exists()


def test_evaluate_rejects_a_checkpoint_of_another_model(tiny_cfg, tmp_path):
    """An HRDA segmentor's weights into the plain segmentor this composition describes."""
    path = tmp_path / "foreign.pt"
    hrda = build_segmentor(tiny_cfg("uda=hrda", n_train=8, n_val=6))
    torch.save({"format": 2, "segmentor": hrda.state_dict(), "config": None}, path)
    cfg = tiny_cfg("model=segmentor", n_train=8, n_val=6)
    with open_dict(cfg):
        cfg.checkpoint = str(path)
        cfg.use_checkpoint_config = False
    with pytest.raises(CheckpointError, match=r"do not fit Segmentor: unexpected \(\d+\): scale_attention"):
        build_inference_model(cfg)
    torch.save({"state_dict": hrda.state_dict()}, path)  # a bare weight file, not a training checkpoint
    with pytest.raises(CheckpointError, match="not a refign training checkpoint"):
        build_inference_model(cfg)


def test_a_label_of_another_size_is_refused_in_the_loader_naming_both_files(tmp_path):
    """Not stretched to the image (dims set), nor cropped to nothing (native size)."""
    root = trees.cityscapes(tmp_path / "Cityscapes")
    ds = Cityscapes(root, "train", dims=(4, 8))
    entry = ds.entries[1]
    Image.new("L", (trees.W // 2, trees.H)).save(entry.semantic)
    line = (
        f"Cityscapes train: label {entry.semantic} is {trees.H}×{trees.W // 2} but its image {entry.image} "
        f"is {trees.H}×{trees.W} (H×W); python -m refign.check_data lists every such file"
    )
    for dataset in (ds, Cityscapes(root, "train", transform=JointTransform(crop_size=(8, 12)))):
        with pytest.raises(DatasetError) as err:
            dataset[1]
        assert str(err.value) == line
    assert ds[0]["semantic"].shape == (4, 8)  # the others load as before


def test_a_crop_of_no_pixels_is_refused():
    with pytest.raises(ValueError, match=r"^crop_size=\[0, 64\]: must be \[height, width\], both > 0$"):
        JointTransform(crop_size=[0, 64])


def test_a_workers_error_is_one_line_naming_the_file(tmp_path):
    """PyTorch re-raises a DataLoader worker's error with the worker's traceback in its message; the line the
    entry points print is the worker's own message, the one the same read raises in this process."""
    ds = Cityscapes(trees.cityscapes(tmp_path / "Cityscapes", {"train": 1}), "train")
    bad = ds.entries[0].image
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError) as here:
        load_image(bad)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(DatasetError) as there:
        next(step_loader(ds, 1, info, seed=0, start_step=0, num_workers=1))
    assert str(there.value).startswith(
        "Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback"
    )
    assert one_line(there.value) == str(here.value)
    assert str(here.value).startswith(f"cannot read image {bad}: ") and "\n" not in str(here.value)
