"""A user's own files: which inputs a path names (image, folder of images, video), and reading and writing
video frames with PyAV (FFmpeg in a binary wheel, ``av`` in requirements/base.txt)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class InputError(OSError):
    """A video that cannot be opened or decoded (the message names the file)."""


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def list_inputs(path: str | Path) -> tuple[Path, list[Path]]:
    """``(base, files)``: the image or video ``path`` names, or every image and video below a folder
    (recursive, sorted); outputs are named by each file's path relative to ``base``."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
        )
        if not files:
            raise FileNotFoundError(
                f"input={path}: no {'/'.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)} file below it"
            )
        return path, files
    if not path.is_file():
        raise FileNotFoundError(f"input={path}: no such file or folder")
    if path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        raise ValueError(
            f"input={path}: not an image ({', '.join(IMAGE_SUFFIXES)}) or video ({', '.join(VIDEO_SUFFIXES)})"
        )
    return path.parent, [path]


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
