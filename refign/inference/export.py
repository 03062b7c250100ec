"""Benchmark-server export (docs/refign.md#test-server-export, docs/deviations.md#d4): trainId PNGs named
after the inputs, colour PNGs, one upload-ready zip, and ``overview.png`` (image | ground truth | prediction
of the first images) for a person to look at.

* ACDC (acdc.vision.ee.ethz.ch/submit): one single-channel PNG of train ids per test image, named like the
  input, at the archive root; the server reports the all-conditions mIoU only.
* Dark Zurich (CodaLab competition 3783): the folders ``labelTrainIds/``, ``labelTrainIds_invalid/`` and
  ``confidence/``. This model predicts no invalid regions and no separate confidence, so the same trainId
  maps go into all three — the submission the server is known to accept (without them it answers "Missing
  prediction for ground truth file …").

Predictions are the argmax of logits resized bilinearly to the dataset's native size (official
``predict_step``), so the files match the ground truth the servers hold.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from refign.data.classes import colorize
from refign.drawing.labels import overview_row, save_overview
from refign.inference.media import save_png
from refign.utils.progress import progress_bar

log = logging.getLogger("refign.predict")
TRAINIDS, COLOR, OVERVIEW = "labelTrainIds", "color", "overview.png"


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


def refuse_to_overwrite(folders: list[Path], overwrite: bool) -> None:
    """Refuse to write into a folder that holds files, unless ``overwrite`` (never silently)."""
    taken = [folder for folder in folders if folder.is_dir() and any(folder.iterdir())]
    if taken and not overwrite:
        raise FileExistsError(
            f"{taken[0]} already holds predictions; choose another out_dir or set overwrite=true"
        )


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
    refuse_to_overwrite([out_dir], overwrite)
    for folder in (TRAINIDS, COLOR):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
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
        save_png(out_dir / TRAINIDS / name, pred)
        save_png(out_dir / COLOR / name, colorize(pred))
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


def export_datasets(
    model: torch.nn.Module,
    datasets: dict[str, Dataset],
    out_dir: Path,
    device: torch.device,
    overwrite: bool,
    overview_images: int,
) -> dict[str, Path]:
    """Each dataset's predictions under ``out_dir/<name>`` and its upload-ready archive
    ``out_dir/<name>_submission.zip`` in its server's format; returns the archives by dataset name."""
    archives = {}
    for name, ds in datasets.items():
        files = predict_dataset(model, ds, out_dir / name, device, overwrite, overview_images)
        fmt = SERVER_FORMATS.get(type(ds).__name__, DEFAULT_FORMAT)
        archives[name] = make_archive(files, fmt, out_dir / f"{name}_submission.zip", overwrite)
        upload = f" (upload it to {fmt.url})" if fmt.url else ""
        log.info(
            "%s: %d predictions in %s, archive %s%s", name, len(files), out_dir / name, archives[name], upload
        )
    return archives
