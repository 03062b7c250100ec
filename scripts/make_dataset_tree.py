"""Full-size dataset trees in the real layouts, rendered by the synthetic scene generator.

    python -m scripts.make_dataset_tree OUT [--datasets cityscapes acdc dark_zurich nighttime_driving
        bdd100k_night robotcar] [--images N] [--eval-images M] [--overwrite]

``N`` images per training split (``M`` per val/test split) of each dataset at its native resolution under OUT,
the folder ``paths.data_root`` then points to: an installation, a GPU and a configuration checked before
downloading 100 GB (docs/performance.md#dataset-trees). A non-empty OUT is refused unless --overwrite, which
replaces only the named datasets' folders.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from refign.data.synthetic.trees import WRITERS, TreeError, write_tree


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="tree root (paths.data_root)")
    names = f"any of {', '.join(WRITERS)} (default: all)"
    p.add_argument("--datasets", nargs="+", default=list(WRITERS), metavar="NAME", help=names)
    p.add_argument("--images", type=int, default=1, help="images per split (default 1)")
    p.add_argument("--eval-images", type=int, default=None, help="per val/test split (default: --images)")
    p.add_argument("--overwrite", action="store_true", help="replace the named datasets' folders in OUT")
    # quick tests only: every side divided by this (the trees exist to be full-size)
    p.add_argument("--size-divisor", type=int, default=1, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        write_tree(args.out, args.datasets, args.images, args.overwrite, args.size_divisor, args.eval_images)
    except TreeError as err:
        print(f"make_dataset_tree: error: {err}", file=sys.stderr)
        return 2
    print(f"tree written in {time.perf_counter() - start:.0f} s: use paths.data_root={args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
