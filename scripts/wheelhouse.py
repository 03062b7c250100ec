"""Which pinned requirements ``scripts/gpu_check.sh`` carries to a GPU machine, and which it installs there.

    python scripts/wheelhouse.py carried [--all]   # requirements/gpu_check.txt less what the GPU image has
    python scripts/wheelhouse.py missing           # the lines whose package this interpreter lacks

Why: the device machines lent to this project bring their own Python, torch and a long list of packages
(``requirements/gpu_image.txt``), no package registry, and a carry limit of 64 MiB per call. Carrying
every pinned wheel (110 MB: opencv-python-headless 48, scipy 36) would not fit, and installing a pin over
a package the machine already has would replace part of its working stack. So the wheelhouse holds only
what the image lacks, and the install there takes only what the interpreter lacks, at the pinned version.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"


def read(path: Path) -> list[Requirement]:
    """The requirements of a requirements file (one per line; ``#`` starts a comment)."""
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def carried(requirements: Path, image: Path | None) -> list[Requirement]:
    """The requirements to download for the GPU machine: all of them, or those its image does not have."""
    present = {canonicalize_name(r.name) for r in read(image)} if image else set()
    return [r for r in read(requirements) if canonicalize_name(r.name) not in present]


def missing(requirements: Path) -> list[Requirement]:
    """The requirements whose distribution is not installed in this interpreter (at any version)."""
    out = []
    for r in read(requirements):
        try:
            importlib.metadata.version(r.name)
        except importlib.metadata.PackageNotFoundError:
            out.append(r)
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
        found = carried(args.requirements, None if args.all else args.image)
    else:
        found = missing(args.requirements)
    print("\n".join(map(str, found)))


if __name__ == "__main__":
    main()
