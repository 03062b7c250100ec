"""Predictions for a user's own images, folders and videos (``python -m refign.predict input=…``).

Every output is named after its input's path relative to the input folder, so a folder tree comes back as
the same tree under ``labelTrainIds/``, ``color/`` and ``overlay/``; where two inputs differ only in their
suffix (``g.jpg``, ``g.png``), their outputs keep it (``g.jpg.png``, ``g.png.png``) rather than overwrite one
another. A file that cannot be read is logged with its path, skipped and counted; the caller turns a
non-empty ``failed`` into a non-zero exit status.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from refign.data.classes import NUM_CLASSES, colorize
from refign.drawing.labels import overlay
from refign.inference.export import COLOR, TRAINIDS, refuse_to_overwrite
from refign.inference.media import (
    InputError,
    VideoWriter,
    is_video,
    list_inputs,
    read_frames,
    read_picture,
    save_png,
    video_info,
)
from refign.inference.segment import segment
from refign.utils.progress import progress_bar

log = logging.getLogger("refign.predict")
OVERLAY = "overlay"


@dataclass(frozen=True)
class FilePredictor:
    """The model at the trained scale, writing each picture's ``labelTrainIds/``, ``color/`` and ``overlay/``
    PNGs under ``out_dir``."""

    model: torch.nn.Module
    device: torch.device
    short_side: int
    out_dir: Path
    alpha: float

    def picture(self, rgb: np.ndarray, name: Path) -> np.ndarray:
        """Segment ``rgb`` and write its three PNGs, named ``name``; returns the train ids."""
        pred = segment(self.model, rgb, self.short_side, self.device)
        save_png(self.out_dir / TRAINIDS / name, pred)
        save_png(self.out_dir / COLOR / name, colorize(pred))
        save_png(self.out_dir / OVERLAY / name, overlay(rgb, pred, self.alpha))
        return pred

    def video(self, path: Path, stem: Path, frames: bool) -> int:
        """``overlay/<stem>.mp4`` (the legend lists every class, so that all frames have one size) and, with
        ``frames``, each frame's PNGs under ``<folder>/<stem>/<index>.png``; returns the number of frames."""
        total, rate = video_info(path)
        target = self.out_dir / OVERLAY / f"{stem}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        writer, n = VideoWriter(target, rate), 0
        try:
            for n, rgb in enumerate(
                progress_bar(read_frames(path), total=total or None, desc=path.name, leave=False), 1
            ):
                if frames:
                    pred = self.picture(rgb, stem / f"{n - 1:06d}.png")
                else:
                    pred = segment(self.model, rgb, self.short_side, self.device)
                writer.write(overlay(rgb, pred, self.alpha, list(range(NUM_CLASSES))))
        finally:
            writer.close()
        if n == 0:
            raise InputError(f"{path}: no video frame could be decoded")
        return n


def output_stems(files: list[Path], base: Path) -> dict[Path, Path]:
    """Each input's output name without a suffix: its path relative to ``base`` less its suffix, or with it
    where another input has the same path but another suffix."""
    stems = {path: path.relative_to(base).with_suffix("") for path in files}
    shared = {stem for stem, n in Counter(stems.values()).items() if n > 1}
    return {path: path.relative_to(base) if stem in shared else stem for path, stem in stems.items()}


def predict_inputs(
    model: torch.nn.Module,
    input_path: str,
    out_dir: Path,
    device: torch.device,
    short_side: int,
    overwrite: bool = False,
    alpha: float = 0.5,
    video_frames: bool = False,
) -> dict[str, list[Path]]:
    """Predict every image and video ``input_path`` names into ``out_dir``; returns the inputs ``written``
    and those that ``failed``, and the folder's files that are neither (``left_out``)."""
    base, files, left_out = list_inputs(input_path)
    stems = output_stems(files, base)
    if left_out:
        names = ", ".join(map(str, left_out))
        log.warning(
            "left out %d file(s) that are neither an image Pillow reads nor a video: %s", len(left_out), names
        )
    refuse_to_overwrite([out_dir / folder for folder in (TRAINIDS, COLOR, OVERLAY)], overwrite)
    predictor = FilePredictor(model.eval(), device, short_side, out_dir, alpha)
    log.info("%d input(s) from %s, brought to a short side of %d px", len(files), input_path, short_side)
    written, failed = [], []
    for path in progress_bar(files, desc="predict", unit="file"):
        try:
            if is_video(path):
                n = predictor.video(path, stems[path], video_frames)
                log.info("%s: %d frames → %s", path, n, out_dir / OVERLAY / f"{stems[path]}.mp4")
            else:
                predictor.picture(read_picture(path), Path(f"{stems[path]}.png"))
            written.append(path)
        except InputError as err:  # an unreadable input (named); errors of the model are not caught
            log.error("skipped %s: %s", path, err)
            failed.append(path)
    unread = f"; {len(failed)} could not be read: " + ", ".join(map(str, failed)) if failed else ""
    log.info("%d of %d input(s) predicted into %s%s", len(written), len(files), out_dir, unread)
    return {"written": written, "failed": failed, "left_out": left_out}
