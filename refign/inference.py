"""Segmenting one RGB picture of any size at the scale the model was trained for, and drawing the result.

A network trained on 540×960 ACDC images sees objects at that scale; fed a 4K frame or a 360p phone clip
as it is, the same street is 2-4× larger or smaller and the predictions degrade (HRDA issue 47). So the
picture is resized (PIL bilinear, as the datasets resize at load time) until its short side is the short
side of the images the checkpoint was evaluated on, the model predicts there (whole or sliding-window,
as configured) and the logits are resized bilinearly to the picture's own size before the argmax — the
path ``refign.evaluate`` takes from a test image to its native-size label.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from refign.data.classes import CLASS_NAMES, PALETTE, colorize
from refign.data.transforms import JointTransform

NORMALISE = JointTransform()  # the evaluation transform: ImageNet normalisation to a (3, H, W) tensor


def working_size(size: tuple[int, int], short_side: int | None) -> tuple[int, int]:
    """(H, W) with the short side ``short_side`` and the aspect ratio kept (rounded); None: unchanged."""
    h, w = size
    if not short_side:
        return h, w
    s = short_side / min(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bilinear resize to (H, W), as ``refign.data.io.load_image`` resizes to a dataset's ``dims``."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))


@torch.no_grad()
def segment(
    model: torch.nn.Module, rgb: np.ndarray, short_side: int | None, device: torch.device
) -> np.ndarray:
    """Train ids (H, W) uint8 of an RGB uint8 picture, at the picture's own size."""
    h, w = rgb.shape[:2]
    image = NORMALISE({"image": resize_rgb(rgb, working_size((h, w), short_side))})["image"]
    logits = model.predict(image[None].to(device), out_size=(h, w))
    return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()


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
