"""Pictures of segmentations for a person to look at: a picture blended with its classes and a legend, and
the overview rows image | ground truth | prediction that ``refign.predict`` writes beside its files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from refign.data.classes import CLASS_NAMES, PALETTE, colorize
from refign.drawing.flow import panel
from refign.utils.imaging import to_rgb_uint8

GAP = 4  # white pixels between the overview's rows and tiles


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def legend(classes: list[int], height: int) -> np.ndarray:
    """A white strip, ``height`` tall, listing each class with its colour (in columns when they do not fit)."""
    font_px = int(np.clip(height // 28, 10, 24))
    font, row = _font(font_px), font_px + font_px // 2
    text_w = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(n, font=font)) for n in CLASS_NAMES)
    col_w, per_col = row + 6 + text_w + 8, max(1, (height - 8) // row)
    cols = max(1, -(-len(classes) // per_col))
    strip = Image.new("RGB", (cols * col_w + 8, height), "white")
    draw = ImageDraw.Draw(strip)
    for i, c in enumerate(classes):
        x, y = 8 + (i // per_col) * col_w, 4 + (i % per_col) * row
        draw.rectangle([x, y + 2, x + row - 4, y + row - 2], fill=tuple(int(v) for v in PALETTE[c]))
        draw.text((x + row + 2, y + 1), CLASS_NAMES[c], fill="black", font=font)
    return np.asarray(strip)


def overlay(
    rgb: np.ndarray, pred: np.ndarray, alpha: float = 0.5, classes: list[int] | None = None
) -> np.ndarray:
    """The picture blended with the class colours (``alpha`` of colour), and to its right a legend of the
    classes present (or of ``classes``: a video lists the classes of all its frames, so that every frame
    has the same size)."""
    blend = ((1 - alpha) * rgb.astype(np.float32) + alpha * colorize(pred).astype(np.float32)).round()
    present = classes if classes is not None else [int(c) for c in np.unique(pred) if c < len(CLASS_NAMES)]
    return np.concatenate([blend.astype(np.uint8), legend(present, rgb.shape[0])], axis=1)


def overview_row(image: torch.Tensor, pred: np.ndarray, label: np.ndarray | None) -> np.ndarray:
    """image | ground truth | prediction (the ground truth only when given), at the input image's size."""
    rgb = to_rgb_uint8(image)
    size = (rgb.shape[1], rgb.shape[0])

    def fit(ids: np.ndarray) -> np.ndarray:  # nearest-neighbour resize of train ids (255 stays ignore)
        return np.asarray(Image.fromarray(ids.astype(np.uint8), "L").resize(size, Image.NEAREST))

    return panel([rgb, *([colorize(fit(label))] if label is not None else []), colorize(fit(pred))], GAP)


def save_overview(rows: list[np.ndarray], path: Path) -> Path:
    """Stack the rows (padded white to the widest) into one PNG."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(panel(padded, GAP, axis=0)).save(path)
    return path
