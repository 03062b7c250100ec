"""refign.align: with the ground-truth flow its warp is the reference sampled at the true correspondences;
it loads the paper's matcher file format; pictures at the target's size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from refign.align import run
from refign.data.datasets.synthetic import SyntheticDataset
from refign.data.io import load_image
from refign.inference.segment import NORMALISE
from refign.utils.errors import ConfigError
from tests.conftest import build_matcher, compose_cfg, save_matcher

N, SIZE = 2, (64, 128)


def synthetic_overrides(tmp_path) -> list[str]:
    return [
        f"paths.cache_dir={tmp_path.parent}/synthetic_cache",
        f"paths.output_dir={tmp_path}/outputs",
        f"dataset.size=[{SIZE[0]},{SIZE[1]}]",
        f"dataset.test.target.num_images={N}",
        f"num_pairs={N}",
        "trainer.device=cpu",
    ]


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) sampled at real coordinates (x, y) inside it, written without torch."""
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, image.shape[1] - 1), np.minimum(y0 + 1, image.shape[0] - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    img = image.astype(np.float64)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def test_oracle_warp_is_the_reference_at_the_true_correspondences(tmp_path):
    out = tmp_path / "align"
    summary = run(compose_cfg([*synthetic_overrides(tmp_path), "alignment=oracle"], "align"), out)
    data = SyntheticDataset("test", "target", N, size=SIZE, load_keys=("image", "image_ref", "flow", "flow_valid"),
                            cache_dir=tmp_path.parent / "synthetic_cache")  # fmt: skip
    for i in range(N):
        sample, name = data[i], f"target/target_test_{i:05d}"
        flow, valid = sample["flow"], sample["flow_valid"].astype(bool)
        ys, xs = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
        x, y = xs + flow[0], ys + flow[1]
        inside = valid & (x > 0) & (x < SIZE[1] - 1) & (y > 0) & (y < SIZE[0] - 1)
        assert inside.mean() > 0.3
        expected = bilinear(sample["image_ref"], x.clip(0, SIZE[1] - 1), y.clip(0, SIZE[0] - 1))
        warped = np.asarray(Image.open(out / f"{name}_warped.png")).astype(np.float64)
        assert warped.shape == (*SIZE, 3)
        assert np.abs(warped - expected)[inside].max() <= 1.0  # uint8 rounding of the normalised round trip
        # the oracle's certainty is its validity: the overlay is half target, half warped reference there
        overlay = np.asarray(Image.open(out / f"{name}_overlay.png")).astype(np.float64)
        half = 0.5 * sample["image"] + 0.5 * warped
        assert np.abs(overlay - half)[inside].max() <= 1.5
        assert (np.asarray(Image.open(out / f"{name}_overlay.png"))[~valid] == 255).all()  # uncertain: white
        assert summary["pairs"][name]["pck1"] == 100.0 and summary["pairs"][name]["aepe"] == 0.0
    panel = Image.open(out / "target/target_test_00000_panel.png")
    assert panel.size == (7 * SIZE[1] + 6 * 4, SIZE[0])  # target, reference, 4 pictures + EPE, 4-px gaps
    assert json.loads((out / "alignment.json").read_text())["overall"]["pck5"] == 100.0
    with pytest.raises(FileExistsError, match="overwrite"):
        run(compose_cfg([*synthetic_overrides(tmp_path), "alignment=oracle"], "align"), out)


def test_paper_matcher_file_on_two_images(tmp_path):
    """A randomly initialised paper-scale matcher saved as uawarpc_megadepth.ckpt is (under 'state_dict',
    official key names) is loaded and used; the reference is brought to the target's size."""
    ckpt = save_matcher(tmp_path / "uawarpc_megadepth.ckpt", seed=3, small=False)
    rng = np.random.default_rng(0)
    target, reference = tmp_path / "street.png", tmp_path / "street_day.jpg"
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), np.uint8)).save(target)
    Image.fromarray(rng.integers(0, 255, (96, 160, 3), np.uint8)).save(reference)
    overrides = [
        "alignment=uawarpc",
        f"alignment.checkpoint={ckpt}",
        f"target={target}",
        f"reference={reference}",
    ]
    summary = run(compose_cfg([*synthetic_overrides(tmp_path), *overrides], "align"), tmp_path / "out")
    for kind in ("warped", "certainty", "overlay", "flow"):
        assert Image.open(tmp_path / "out" / f"street_{kind}.png").size == (80, 48)
    assert not (tmp_path / "out" / "street_epe.png").exists() and "overall" not in summary

    network = build_matcher(small=False, checkpoint=str(ckpt)).eval()
    trg = NORMALISE({"image": load_image(target)})["image"][None]
    ref = NORMALISE({"image": load_image(reference, (48, 80))})["image"][None]
    with torch.no_grad():
        _, certainty = network(trg, ref)
    assert summary["pairs"]["street"]["certainty_mean"] == pytest.approx(float(certainty.mean()), abs=1e-4)


def test_untrained_matcher_is_refused(tmp_path):
    cfg = compose_cfg([*synthetic_overrides(tmp_path), "alignment=uawarpc"], "align")
    with pytest.raises(ConfigError, match="alignment.checkpoint=<file>"):
        run(cfg, tmp_path / "out")


@pytest.mark.parametrize("overrides", [[], ["dataset=acdc"]], ids=["synthetic", "acdc"])
def test_align_and_check_data_read_the_training_composition(overrides):
    """``alignment=…`` and ``dataset=…`` mean for refign.align and refign.check_data what they mean for
    training (both inherit train.yaml)."""
    train = OmegaConf.to_container(compose_cfg(overrides))
    for entry in ("align", "check_data"):
        other = OmegaConf.to_container(compose_cfg(overrides, entry))
        assert other["alignment"] == train["alignment"] and other["dataset"] == train["dataset"], entry
