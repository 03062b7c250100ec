"""Which pinned requirements ``scripts/gpu/gpu_check.sh`` carries to a GPU machine, and which it installs there.

    python -m scripts.gpu.wheelhouse carried [--all]   # requirements.txt less what the GPU image has (image.txt)
    python -m scripts.gpu.wheelhouse missing           # the lines whose package this interpreter lacks

Installing a pin over a package the machine's image already has would replace part of its working stack, so
the wheelhouse holds only what the image lacks and the install takes only what the interpreter lacks
(scripts/gpu/README.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent


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
    installed = {canonicalize_name(d.name) for d in importlib.metadata.distributions() if d.name}
    return [r for r in read(requirements) if canonicalize_name(r.name) not in installed]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["carried", "missing"])
    p.add_argument("--all", action="store_true", help="carried: ignore the image's list (any GPU machine)")
    p.add_argument("--requirements", type=Path, default=HERE / "requirements.txt")
    p.add_argument("--image", type=Path, default=HERE / "image.txt", help="the packages the GPU image has")
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
