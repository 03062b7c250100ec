"""Create Cityscapes ``*_gtFine_labelTrainIds.png`` with cityscapesscripts, plus the class statistics.

    python -m scripts.prepare_cityscapes $REFIGN_DATA_DIR/Cityscapes [--gt-dir gtFine] [-o OUT] [--nproc 4]

The official converter (``json2labelImg``, ``trainIds``) writes each trainId PNG beside its polygons (existing
ones kept unless --force). As the official ``tools/convert_cityscapes.py`` (docs/refign.md#cityscapes), the
train labels' per-image pixel counts and the stem lists go to OUT (default: the Cityscapes root). Training
recomputes and caches these counts itself: the json files are for inspection and for tools that expect them.
"""

from __future__ import annotations

import argparse
import json
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from PIL import Image

from refign.utils.progress import progress_bar

NUM_CLASSES = 19
POLYGONS = "_gtFine_polygons.json"
TRAINIDS = "_gtFine_labelTrainIds.png"


def convert_one(job: tuple[str, bool, bool]) -> tuple[str, dict[int, int] | None]:
    """Write one trainId PNG; return its path and, for train files, the pixel count per train id."""
    poly, force, count = job
    label = poly[: -len(POLYGONS)] + TRAINIDS
    if force or not Path(label).is_file():
        json2labelImg(poly, label, "trainIds")
    if not count:
        return label, None
    ids, n = np.unique(np.asarray(Image.open(label)), return_counts=True)
    return label, {int(i): int(c) for i, c in zip(ids, n, strict=True) if i < NUM_CLASSES}


def write_stats(out: Path, stats: list[tuple[str, dict[int, int]]]) -> None:
    listed = [{**{str(c): n for c, n in counts.items()}, "file": label} for label, counts in stats]
    by_file = {label: {str(c): n for c, n in counts.items()} for label, counts in stats}
    with_class: dict[str, list] = {}
    for label, counts in stats:
        for c, n in counts.items():
            with_class.setdefault(str(c), []).append([label, n])
    for name, obj in (
        ("sample_class_stats.json", listed),
        ("sample_class_stats_dict.json", by_file),
        ("samples_with_class.json", with_class),
    ):
        (out / name).write_text(json.dumps(obj, indent=1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cityscapes", type=Path, help="the Cityscapes root (with leftImg8bit/ and gtFine/)")
    p.add_argument("--gt-dir", default="gtFine")
    p.add_argument("-o", "--out-dir", type=Path, default=None)
    p.add_argument("--nproc", type=int, default=4)
    p.add_argument("--force", action="store_true", help="rewrite existing trainId PNGs")
    args = p.parse_args(argv)
    # absolute paths: the stats store label paths that the loaders must find again (docs/refign.md#cityscapes)
    root = args.cityscapes.resolve()
    gt = root / args.gt_dir
    if not gt.is_dir():
        raise SystemExit(f"expected the folder {gt} (Cityscapes gtFine annotations)")
    out = (args.out_dir or root).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train_stats = []
    for split in ("train", "val", "test"):
        polys = sorted(str(f) for f in (gt / split).glob(f"*/*{POLYGONS}"))
        jobs = [(f, args.force, split == "train") for f in polys]
        with Pool(max(1, args.nproc)) as pool:
            converted = pool.imap(convert_one, jobs, chunksize=8)
            results = list(progress_bar(converted, total=len(jobs), desc=f"{split} labels"))
        if split == "train":
            train_stats = results
        stems = [str(Path(f).relative_to(gt / split))[: -len(POLYGONS)] for f in polys]
        (out / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
    write_stats(out, train_stats)
    print(f"trainId labels under {gt}; class statistics and split lists in {out}")


if __name__ == "__main__":
    main()
