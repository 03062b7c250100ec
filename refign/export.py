"""Benchmark-server export: trainId PNGs named after the inputs, colour PNGs, one upload-ready zip.

Servers (docs/refign.md#test-server-export, docs/deviations.md#d4):

* ACDC (acdc.vision.ee.ethz.ch/submit): the test images of all four conditions, one single-channel PNG of
  train ids per input image, named like the input (``<name>_rgb_anon.png``), at the archive root. The server
  reports the all-conditions mIoU only; per-condition numbers need one submission per condition.
* Dark Zurich (CodaLab competition 3783): the archive needs the three folders ``labelTrainIds/``,
  ``labelTrainIds_invalid/`` and ``confidence/``. This model predicts no invalid regions and no separate
  confidence, so the same trainId maps go into all three — the submission the server is known to accept
  (without them it answers "Missing prediction for ground truth file …").

Predictions are the argmax of logits resized bilinearly to the dataset's native size (official
``predict_step``), so the files match the ground truth the servers hold. Beside them, ``overview.png`` shows
the first images as rows of image | ground truth (where the split has labels) | prediction, for a person to
look at.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from refign.data.classes import colorize
from refign.imaging import to_rgb_uint8
from refign.progress import progress_bar

TRAINIDS, COLOR, OVERVIEW = "labelTrainIds", "color", "overview.png"
GAP = 4  # white pixels between the overview's rows and tiles


@dataclass(frozen=True)
class ServerFormat:
    folders: tuple[str, ...]  # archive folders that each hold every trainId PNG ("" = archive root)
    url: str


SERVER_FORMATS = {
    "ACDC": ServerFormat(("",), "https://acdc.vision.ee.ethz.ch/submit"),
    "DarkZurich": ServerFormat(
        ("labelTrainIds", "labelTrainIds_invalid", "confidence"),
        "https://codalab.lisn.upsaclay.fr/competitions/3783",
    ),
}
DEFAULT_FORMAT = ServerFormat(("",), "")


def png_name(filename: str) -> str:
    """The input file name with a ``.png`` extension (BDD100k images are ``.jpg``)."""
    return str(Path(filename).with_suffix(".png"))


def prepare_dir(path: Path, overwrite: bool) -> None:
    """Create ``path``; refuse to write into a non-empty one unless ``overwrite`` (never silently)."""
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{path} already holds predictions; choose another out_dir or set overwrite=true"
        )
    (path / TRAINIDS).mkdir(parents=True, exist_ok=True)
    (path / COLOR).mkdir(parents=True, exist_ok=True)


def overview_row(image: torch.Tensor, pred: np.ndarray, label: np.ndarray | None) -> np.ndarray:
    """image | ground truth | prediction (the ground truth only when given), at the input image's size."""
    rgb = to_rgb_uint8(image)
    size = (rgb.shape[1], rgb.shape[0])

    def fit(ids: np.ndarray) -> np.ndarray:  # nearest-neighbour resize of train ids (255 stays ignore)
        return np.asarray(Image.fromarray(ids.astype(np.uint8), "L").resize(size, Image.NEAREST))

    tiles = [rgb, *([colorize(fit(label))] if label is not None else []), colorize(fit(pred))]
    gap = np.full((rgb.shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1)


def save_overview(rows: list[np.ndarray], path: Path) -> Path:
    """Stack the rows (padded white to the widest) into one PNG."""
    width = max(r.shape[1] for r in rows)
    parts = []
    for row in rows:
        pad = np.full((row.shape[0], width - row.shape[1], 3), 255, np.uint8)
        parts += [np.concatenate([row, pad], axis=1), np.full((GAP, width, 3), 255, np.uint8)]
    Image.fromarray(np.concatenate(parts[:-1], axis=0)).save(path)
    return path


@torch.no_grad()
def predict_dataset(
    model: torch.nn.Module,
    dataset: Dataset,
    out_dir: Path,
    device: torch.device,
    overwrite: bool = False,
    overview_images: int = 8,
) -> list[Path]:
    """Write ``out_dir/labelTrainIds/<name>.png`` (train ids 0..18) and ``out_dir/color/<name>.png`` for
    every image, and ``out_dir/overview.png`` of the first ``overview_images`` (0: none); returns the trainId
    files in dataset order."""
    prepare_dir(out_dir, overwrite)
    out_size = tuple(getattr(dataset, "orig_dims", ())) or None
    model.eval()
    written, rows = [], []
    for batch in progress_bar(DataLoader(dataset, batch_size=1), desc=f"predict {out_dir.name}"):
        image = batch["image"].to(device)
        logits = model.predict(image, out_size=out_size or image.shape[-2:])
        pred = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        name = png_name(batch["filename"][0])
        if (out_dir / TRAINIDS / name).exists() and not overwrite:
            raise FileExistsError(f"two inputs map to the same prediction file {name}")
        Image.fromarray(pred, "L").save(out_dir / TRAINIDS / name)
        Image.fromarray(colorize(pred)).save(out_dir / COLOR / name)
        written.append(out_dir / TRAINIDS / name)
        if len(rows) < overview_images:
            label = batch["semantic"][0].numpy() if "semantic" in batch else None
            rows.append(overview_row(batch["image"][0], pred, label))
    if rows:
        save_overview(rows, out_dir / OVERVIEW)
    return written


def make_archive(files: list[Path], fmt: ServerFormat, archive: Path, overwrite: bool = False) -> Path:
    """One zip in the server's layout: every trainId PNG in each of ``fmt.folders``."""
    if archive.exists() and not overwrite:
        raise FileExistsError(f"{archive} exists; set overwrite=true to replace it")
    tmp = archive.with_name(f".{archive.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for folder in fmt.folders:
            for path in files:
                zf.write(path, f"{folder}/{path.name}" if folder else path.name)
    tmp.replace(archive)
    return archive
