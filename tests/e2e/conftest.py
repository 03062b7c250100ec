"""The user's three commands chained on one run: ``refign.train`` → ``refign.evaluate`` → ``refign.predict``.

Every run is tiny (32×64 images, 32×32 crops, one image per domain, one step); what is checked is that the
commands work together and agree with each other, not what the network learnt.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from refign import build, evaluate, predict, train
from refign.data.classes import colorize
from refign.drawing.labels import GAP
from refign.engine import checkpoint
from refign.inference.export import OVERVIEW, TRAINIDS, png_name
from refign.utils.imaging import to_rgb_uint8
from tests.conftest import compose_cfg, numpy_miou

SYNTHETIC = [  # the data side, shared by train, evaluate and predict
    "dataset.size=[32,64]",
    "dataset.train_source.num_images=2",
    "dataset.train_target.num_images=2",
    "dataset.val.source.num_images=1",
    "dataset.val.target.num_images=2",
    "dataset.test.target.num_images=2",  # dataset.predict is the test split
]
STEP = [  # the training side: one step of one image per domain, evaluated and saved at the end
    "dataset.crop_size=[32,32]",
    "dataset.batch_size=1",
    "trainer.max_steps=1",
    "trainer.log_every=1",
    "trainer.eval_every=0",
    "trainer.checkpoint_every=0",
    "trainer.num_workers=0",
    "schedule.warmup_iters=1",
]


def paths(tmp: Path) -> list[str]:
    return [f"paths.output_dir={tmp}/outputs", f"paths.cache_dir={tmp.parent}/synthetic_cache"]


def logged(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def at_size(ids: np.ndarray, h: int, w: int) -> np.ndarray:
    """Train ids resized (nearest) to h × w, as a picture of a prediction at the dataset's native size."""
    return np.asarray(Image.fromarray(ids.astype(np.uint8)).resize((w, h), Image.NEAREST))


def check_overview(path: Path, rows: list[tuple[np.ndarray, np.ndarray | None, np.ndarray]]) -> None:
    """``overview.png``: one row per image, tiles image | ground truth (if any) | prediction, at the image's
    size; the label and prediction tiles must be the colourised label and trainId PNG."""
    picture = np.asarray(Image.open(path))
    h, w = rows[0][0].shape[:2]
    tiles = 2 + (rows[0][1] is not None)
    assert picture.shape == (len(rows) * (h + GAP) - GAP, tiles * (w + GAP) - GAP, 3)
    for r, (image, label, pred) in enumerate(rows):
        row = picture[r * (h + GAP) : r * (h + GAP) + h]
        np.testing.assert_array_equal(row[:, :w], image)
        if label is not None:
            np.testing.assert_array_equal(row[:, w + GAP : 2 * w + GAP], colorize(at_size(label, h, w)))
        np.testing.assert_array_equal(row[:, -w:], colorize(at_size(pred, h, w)))


def evaluate_and_predict(tmp: Path, ckpt: Path, data: list[str], trained: dict) -> dict:
    """``refign.evaluate`` on the validation sets must reproduce the training run's final evaluation
    exactly (the checkpoint's segmentor is the network that was evaluated). ``refign.predict`` writes one
    trainId PNG per image at the dataset's native size and an overview picture of them; where the labels
    are at that size too (synthetic), their mIoU (numpy) is what ``refign.evaluate split=test`` reports.
    Returns the checkpoint."""
    common = [*paths(tmp), *data, f"checkpoint={ckpt}", "trainer.device=cpu", "trainer.num_workers=0"]
    assert evaluate.run(compose_cfg(common, "eval"), tmp / "evaluate") == trained
    cfg = compose_cfg(common, "predict")
    archives = predict.run(cfg, tmp / "predict")
    for name, dataset in build.build_datasets(cfg, "predict").items():
        assert archives[name].is_file()
        samples = [dataset[i] for i in range(len(dataset))]
        folder = tmp / "predict" / name
        preds = [np.asarray(Image.open(folder / TRAINIDS / png_name(s["filename"]))) for s in samples]
        native = tuple(getattr(dataset, "orig_dims", ())) or tuple(samples[0]["image"].shape[-2:])
        assert all(p.shape == native for p in preds)
        labels = [s["semantic"].numpy() if "semantic" in s else None for s in samples]
        if labels[0] is not None and labels[0].shape == native:
            tested = evaluate.run(compose_cfg([*common, "split=test"], "eval"), tmp / "evaluate_test")
            over_present = cfg.dataset.over_present_classes
            assert numpy_miou(list(zip(preds, labels, strict=True)), over_present) == tested[name]["mIoU"]
        rows = [(to_rgb_uint8(s["image"]), y, p) for s, y, p in zip(samples, labels, preds, strict=True)]
        check_overview(folder / OVERVIEW, rows[: cfg.overview_images])
    return checkpoint.load(ckpt)


def train_evaluate_predict(tmp: Path, overrides: list[str], data: list[str] = SYNTHETIC) -> tuple[dict, list]:
    """One training run, then evaluate and predict on its checkpoint; returns (checkpoint, logged lines)."""
    run_dir = tmp / "train"
    trained = train.run(compose_cfg([*paths(tmp), *data, *STEP, *overrides]), run_dir)  # overrides last
    state = evaluate_and_predict(tmp, run_dir / "checkpoints" / checkpoint.LAST, data, trained)
    return state, logged(run_dir)
