"""alignment=oracle: the ground-truth flow through Refign's align() maps reference labels onto the target."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from refign import build
from refign.alignment.oracle import GroundTruthFlow
from refign.data.classes import IGNORE_INDEX
from refign.data.datasets.synthetic import SyntheticDataset
from refign.data.transforms import JointTransform
from refign.refine.pseudo_labeler import RefignPseudoLabeler
from refign.refine.refiner import LARGE_STATIC_CLASSES


def test_ground_truth_flow_through_align_reproduces_target_static_labels(tmp_path):
    keys = ("image", "image_ref", "semantic", "semantic_ref", "flow", "flow_valid")
    ds = SyntheticDataset(
        "val",
        "target",
        4,
        size=(64, 128),
        load_keys=keys,
        cache_dir=tmp_path,
        transform=JointTransform(crop_size=(48, 96), flip_p=1.0),
    )  # crop + flip as in training
    samples = [ds[i] for i in range(4)]  # one random crop/flip per sample, shared by all its keys
    batch = {k: torch.stack([x[k] for x in samples]) for k in keys}
    ref = batch["semantic_ref"].clone()
    ref[ref == IGNORE_INDEX] = 0
    logits_ref = 10 * F.one_hot(ref, 19).permute(0, 3, 1, 2).float()
    labeler = RefignPseudoLabeler(GroundTruthFlow())
    warped, valid, certainty = labeler.align(logits_ref, batch["image_ref"], batch["image"], batch)
    target = batch["semantic"]
    static = torch.isin(target, torch.tensor(LARGE_STATIC_CLASSES))
    region = valid & static & batch["flow_valid"]
    assert region.float().mean() > 0.3
    agreement = (warped.argmax(1)[region] == target[region]).float().mean().item()
    assert agreement > 0.95, agreement
    np.testing.assert_array_equal(certainty[:, 0].bool().numpy(), batch["flow_valid"].numpy())


def test_oracle_alone_has_the_target_set_load_the_flow(tiny_cfg):
    """``alignment=oracle`` with nothing else: the build asks the target set for the reference and the flow."""
    cfg = tiny_cfg("refign=on", "uda=dacs", "alignment=oracle")
    assert list(cfg.dataset.train_target.load_keys) == ["image"]  # the dataset's own keys
    assert build.target_load_keys(cfg) == ["image", "image_ref", "flow", "flow_valid"]
    assert isinstance(build.build_method(cfg).pseudo_labeler.aligner, GroundTruthFlow)
    _, target = build.build_train_sets(cfg)
    sample = target[0]
    assert {"image_ref", "flow", "flow_valid"} <= set(sample) and sample["flow"].shape[0] == 2
    # a trained matcher reads no flow, and without Refign nothing but the images is loaded
    assert build.target_load_keys(tiny_cfg("refign=on", "uda=dacs")) == ["image", "image_ref"]
    assert build.target_load_keys(tiny_cfg("refign=off", "uda=dacs")) == ["image"]
