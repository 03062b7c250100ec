"""Benchmark export end to end, and per-condition mIoU against an independent numpy computation."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from refign import build
from refign.data.datasets.acdc import ACDC
from refign.data.datasets.dark_zurich import DarkZurich
from refign.engine import checkpoint
from refign.engine.dist import DistInfo
from refign.engine.evaluator import evaluate
from refign.predict import run
from tests.conftest import compose_cfg, numpy_miou
from tests.data import trees


def tiny_checkpoint(tmp_path: Path, dataset: str) -> list[str]:
    """A source-only MiT-b0 checkpoint in the engine's format, and overrides that point at the fixtures."""
    overrides = [
        f"dataset={dataset}",
        "backbone=mit_b0",
        "backbone.pretrained=null",
        "head=daformer_small",
        "uda=source_only",
        "refign=off",  # predict.yaml inherits train.yaml, whose default is DAFormer + Refign
        "rcs=off",
        f"paths.data_root={tmp_path}",
        f"paths.output_dir={tmp_path}/outputs",
        "dataset.target_dims=[32,64]",
        "trainer.device=cpu",
    ]
    cfg = compose_cfg([*overrides, "checkpoint=unused"], "predict")
    torch.manual_seed(0)
    method = build.build_method(cfg)
    ckpt = tmp_path / "last.pt"
    torch.save({**checkpoint.method_entries(method), "config": OmegaConf.to_container(cfg)}, ckpt)
    return [*overrides, f"checkpoint={ckpt}"]


@pytest.mark.parametrize("dataset", ["acdc", "dark_zurich"])
def test_predict_writes_server_archive(tmp_path, monkeypatch, dataset):
    if dataset == "acdc":
        trees.acdc(tmp_path / "ACDC", {"fog": 1, "night": 2, "rain": 1, "snow": 1})
        monkeypatch.setattr(ACDC, "orig_dims", (16, 32))
        expected = {f"GOPR04{f % 2}5_frame_{f:06d}_rgb_anon.png" for f in (0, 100, 101)}  # fog 0, night 0–1
        folders, n = [""], 5
    else:
        trees.dark_zurich(tmp_path / "DarkZurich", n_test=3)
        monkeypatch.setattr(DarkZurich, "orig_dims", (16, 32))
        expected = {f"GOPR0356_frame_{i:06d}_rgb_anon.png" for i in range(3)}
        folders, n = ["labelTrainIds", "labelTrainIds_invalid", "confidence"], 3
    cfg = compose_cfg(tiny_checkpoint(tmp_path, dataset), "predict")
    out = tmp_path / "pred"
    archive = run(cfg, out)[dataset]
    assert archive == out / f"{dataset}_submission.zip"
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        assert len(names) == n * len(folders)
        assert {str(Path(x).parent) for x in names} == {f or "." for f in folders}
        assert expected <= {Path(x).name for x in names}
        for x in names:
            with zf.open(x) as f, Image.open(f) as img:
                arr = np.asarray(img)
                assert img.mode == "L" and arr.shape == (16, 32)  # native size, not the 32×64 input
                assert arr.max() <= 18
    color = sorted((out / dataset / "color").iterdir())
    assert len(color) == n and np.asarray(Image.open(color[0])).shape == (16, 32, 3)
    with pytest.raises(FileExistsError, match="overwrite"):
        run(cfg, out)


class ColumnModel(torch.nn.Module):
    """Predicts class 0 on the left quarter of the columns and 1 elsewhere (from the image's green ramp)."""

    def predict(self, x: torch.Tensor, out_size) -> torch.Tensor:
        right = (x[:, 1:2] > x[:, 1:2].amin(dim=-1, keepdim=True) + 0.5).float()
        logits = torch.zeros(x.shape[0], 19, *x.shape[-2:])
        logits[:, 0:1], logits[:, 1:2] = 1 - right, right
        return torch.nn.functional.interpolate(logits, size=tuple(out_size), mode="nearest")


def test_per_condition_miou_matches_numpy(tmp_path):
    ds = ACDC(trees.acdc(tmp_path / "ACDC"), "val")
    model = ColumnModel()
    result = evaluate(model, ds, DistInfo(0, 1, 0, torch.device("cpu")), num_classes=19)
    by_cond: dict[str, list] = {c: [] for c in ds.conditions}
    for i, entry in enumerate(ds.entries):
        pred = model.predict(ds[i]["image"][None], (8, 16)).argmax(1)[0].numpy()
        by_cond[entry.condition].append((pred, np.asarray(Image.open(entry.semantic))))
    assert result["per_condition"] == {c: numpy_miou(p) for c, p in by_cond.items()}
    assert result["mIoU"] == numpy_miou([p for v in by_cond.values() for p in v])
    assert len(set(result["per_condition"].values())) > 1
