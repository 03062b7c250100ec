"""scripts/prepare_cityscapes.py: trainId PNGs via cityscapesscripts and the class statistics."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from scripts.prepare_cityscapes import main


def polygons(path, label: str) -> None:
    """A 16×8 annotation: ``label`` on the left half, road on the right, the rest unlabelled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    objects = [
        {"label": label, "polygon": [[0, 0], [7, 0], [7, 7], [0, 7]]},
        {"label": "road", "polygon": [[8, 0], [15, 0], [15, 7], [8, 7]]},
    ]
    path.write_text(json.dumps({"imgHeight": 8, "imgWidth": 16, "objects": objects}))


def test_prepare_writes_train_ids_and_stats(tmp_path):
    root = tmp_path / "Cityscapes"
    polygons(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_polygons.json", "car")
    polygons(root / "gtFine/val/bremen/bremen_000000_000019_gtFine_polygons.json", "sky")
    main([str(root), "--nproc", "1"])
    label = np.asarray(Image.open(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png"))
    assert set(np.unique(label)) <= {0, 13, 255} and label[4, 2] == 13 and label[4, 12] == 0
    stats = json.loads((root / "sample_class_stats.json").read_text())
    assert len(stats) == 1 and stats[0]["file"].endswith("aachen_000000_000019_gtFine_labelTrainIds.png")
    assert stats[0]["13"] > 0 and stats[0]["0"] > 0
    assert json.loads((root / "samples_with_class.json").read_text())["13"][0][1] == stats[0]["13"]
    assert (root / "val.txt").read_text() == "bremen/bremen_000000_000019\n"
