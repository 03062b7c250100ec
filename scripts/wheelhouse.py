"""Which pinned requirements ``scripts/gpu_check.sh`` carries to a GPU machine, and which it installs there.

    python scripts/wheelhouse.py carried [--all]   # requirements/gpu_check.txt less what the GPU image has
    python scripts/wheelhouse.py missing           # the lines whose package this interpreter lacks

Why: the device machines lent to this project bring their own Python, torch and a long list of packages
(``requirements/gpu_image.txt``), no package registry, and a carry limit of 64 MiB per call. Carrying
every pinned wheel (106 MB: opencv-python-headless 48, scipy 36) would not fit, and installing a pin over
a package the machine already has would replace part of its working stack. So the wheelhouse holds only
what the image lacks, and the install there takes only what the interpreter lacks, at the pinned version.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(path: Path) -> list[str]:
    """The ``name==version`` lines of a requirements file."""
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def names(path: Path) -> set[str]:
    return {canonical(re.split(r"[=<>!~ ]", line)[0]) for line in pinned(path)}


def carried(requirements: Path, image: Path | None) -> list[str]:
    """The requirements to download for the GPU machine: all of them, or those its image does not have."""
    present = names(image) if image else set()
    return [line for line in pinned(requirements) if canonical(line.split("==")[0]) not in present]


def missing(requirements: Path) -> list[str]:
    """The requirements whose distribution is not installed in this interpreter (at any version)."""
    out = []
    for line in pinned(requirements):
        try:
            importlib.metadata.version(line.split("==")[0])
        except importlib.metadata.PackageNotFoundError:
            out.append(line)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["carried", "missing"])
    p.add_argument("--all", action="store_true", help="carried: ignore the image's list (any GPU machine)")
    p.add_argument("--requirements", type=Path, default=REQUIREMENTS / "gpu_check.txt")
    p.add_argument("--image", type=Path, default=REQUIREMENTS / "gpu_image.txt")
    args = p.parse_args()
    for path in (args.requirements, args.image):
        if not path.is_file():
            p.error(f"no such requirements file: {path}")
    if args.what == "carried":
        print("\n".join(carried(args.requirements, None if args.all else args.image)))
    else:
        print("\n".join(missing(args.requirements)))


if __name__ == "__main__":
    main()
