"""A user's own files: which inputs a path names (image, folder of images, video), reading a picture as a viewer
shows it, and reading and writing video frames with PyAV (FFmpeg in a binary wheel, ``av`` in
requirements/base.txt)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def _pillow_suffixes() -> tuple[str, ...]:
    """Every suffix of a format Pillow decodes: its stub formats (HDF5, GRIB, BUFR, WMF: identified, not
    decoded without a handler) and the videos (read by PyAV) left out."""
    extensions = Image.registered_extensions()  # imports every plugin, which fills Image.OPEN
    decodes = {
        fmt
        for fmt, (factory, _) in Image.OPEN.items()
        if not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))
    }
    return tuple(sorted(e for e, fmt in extensions.items() if fmt in decodes and e not in VIDEO_SUFFIXES))


IMAGE_SUFFIXES = _pillow_suffixes()
WHITE = (255, 255, 255)


class InputError(OSError):
    """An image or video that cannot be opened or decoded (the message names the file)."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def is_input(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES


def list_inputs(path: str | Path) -> tuple[Path, list[Path], list[Path]]:
    """``(base, files, left_out)``: the image or video ``path`` names, or every image and video below a folder
    (recursive, sorted) and the folder's other files; outputs are named by each file's path relative to
    ``base``."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file())
        files = [p for p in found if is_input(p)]
        if not files:
            raise FileNotFoundError(f"input={path}: no image (any type Pillow reads) or video file below it")
        return path, files, [p for p in found if not is_input(p)]
    if not path.is_file():
        raise FileNotFoundError(f"input={path}: no such file or folder")
    if not is_input(path):
        raise ValueError(
            f"input={path}: not an image type Pillow reads or a video ({', '.join(VIDEO_SUFFIXES)})"
        )
    return path.parent, [path], []


def read_picture(path: Path) -> np.ndarray:
    """A user's picture as RGB uint8 (H, W, 3), as a viewer shows it: turned by its EXIF orientation (phone
    photos store the sensor's rows), 16-bit grey scaled by 1/257 to 8 bits (Pillow's ``convert("RGB")`` clips
    it at 255: nearly white), and transparency composited over white, as a browser shows it on a white page
    (dropping the alpha would show whatever colour the transparent pixels happen to store). Pillow itself
    reads 16-bit colour as 8-bit (the high byte) and maps palettes to their colours."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                grey = np.clip(np.asarray(img, np.float64) / 257, 0, 255)
                return np.repeat(np.rint(grey).astype(np.uint8)[..., None], 3, axis=2)
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                rgba = img.convert("RGBA")
                img = Image.alpha_composite(Image.new("RGBA", rgba.size, (*WHITE, 255)), rgba)
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot read image {path}: {err}") from err


def save_png(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8: (H, W) or (H, W, 3)) to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _av():
    try:
        import av
    except ImportError as err:  # pragma: no cover - av is in requirements/base.txt
        raise RuntimeError(
            "reading and writing video needs PyAV: pip install av (requirements/base.txt)"
        ) from err
    return av


def video_info(path: Path) -> tuple[int, Fraction]:
    """(number of frames as the container states it, 0 if unknown; frame rate)."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            return int(stream.frames or 0), Fraction(stream.average_rate or 25)
    except av.FFmpegError as err:
        raise InputError(f"cannot read video {path}: {err}") from err


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a video as RGB uint8 (H, W, 3)."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as err:
        raise InputError(f"cannot decode video {path}: {err}") from err


class VideoWriter:
    """Writes RGB uint8 frames to an H.264 (or, without libx264, MPEG-4) video; sizes are padded to even
    numbers, which the yuv420p pixel format needs."""

    def __init__(self, path: Path, rate: Fraction) -> None:
        self.av = _av()
        self.container = self.av.open(str(path), "w")
        codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=rate)
        self.stream.pix_fmt = "yuv420p"
        self.size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if self.size is None:
            self.size = (h + h % 2, w + w % 2)
            self.stream.height, self.stream.width = self.size
        padded = np.zeros((*self.size, 3), np.uint8)
        padded[:h, :w] = rgb
        frame = self.av.VideoFrame.from_ndarray(padded, format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
