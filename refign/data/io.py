"""Reading images and labels from disk with errors that name the file at fault."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image


class DatasetError(RuntimeError):
    """A dataset folder, list or file that is missing, unpaired or unreadable."""


def require_dir(path: str | os.PathLike, what: str) -> None:
    """Fail early with the expected folder when a dataset root or split folder is missing."""
    if not os.path.isdir(path):
        raise DatasetError(
            f"{what}: expected folder {path} does not exist (check paths.data_root / "
            f"$REFIGN_DATA_DIR and the layout in docs/data.md#expected-layout)"
        )


def load_image(path: str | os.PathLike, size: Sequence[int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3), bilinearly resized to ``size`` = (H, W) when given (the official ``dims``)."""
    return np.asarray(_open(path, "RGB", size, Image.BILINEAR))


def load_label(path: str | os.PathLike, size: Sequence[int] | None = None) -> np.ndarray:
    """Label map (H, W) as stored (train ids), nearest-resized to ``size`` when given."""
    return np.asarray(_open(path, None, size, Image.NEAREST))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file, read from its header alone (nothing is decoded)."""
    with _reading(path), Image.open(path) as img:
        return img.height, img.width


@contextlib.contextmanager
def _reading(path: str | os.PathLike) -> Iterator[None]:
    """A missing or unreadable file becomes a ``DatasetError`` naming it."""
    if not os.path.isfile(path):
        raise DatasetError(f"file not found: {path}")
    try:
        yield
    except (OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"cannot read image {path}: {err}") from err


def open_image(path: str | os.PathLike, mode: str | None = None) -> Image.Image:
    """The image at ``path``, decoded at its native size and converted to ``mode`` when given."""
    with _reading(path), Image.open(path) as img:
        img.load()
        return img.convert(mode) if mode else img


def _open(path, mode: str | None, size: Sequence[int] | None, resample: int) -> Image.Image:
    img = open_image(path, mode)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), resample)
    return img
