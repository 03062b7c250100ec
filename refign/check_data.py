"""python -m refign.check_data [dataset=acdc|dark_zurich|robotcar|synthetic] [align_data=megadepth|robotcar]
[paths.data_root=…] — is the download complete and laid out right?

Walks the splits the composition would load (``splits=all``: every split of each dataset it names) and
prints per split and condition the images found against the official counts, the references and labels
paired with them, the image sizes, then every problem with the file it concerns (missing, unreadable, wrong
size, label values outside the train ids, counts off) and one summary line. Exits with status 1 when
anything is missing or broken. Headers only unless ``decode=true`` (docs/tools.md#check-data).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from refign import build
from refign.cli import entry_point
from refign.data.check import (
    FileCheck,
    Problem,
    Report,
    check_folder_split,
    check_megadepth_scenes,
    check_pairs_csv,
    check_synthetic,
    summary,
)
from refign.data.datasets.base import FolderDataset
from refign.data.datasets.megadepth import VAL_SCENES
from refign.data.io import DatasetError

NODES = ("train_source", "train_target", "val", "test", "predict")


def dataset_specs(cfg: DictConfig) -> list[DictConfig]:
    """Every dataset node of ``cfg.dataset`` (training, validation, test, predict), each once."""
    specs, seen = [], set()
    for node in NODES:
        value = cfg.dataset.get(node)
        for spec in ([value] if node.startswith("train") else (value or {}).values()) if value else []:
            key = OmegaConf.to_yaml(spec, resolve=True)
            if key not in seen:
                seen.add(key)
                specs.append(spec)
    return specs


def folder_targets(cfg: DictConfig, spec: DictConfig) -> list[tuple[str, list[str]]]:
    """``(split, keys)`` to check for a real dataset's node: every file its split offers (ACDC's test
    references too, which predict does not load); with ``splits=all`` every split of the dataset."""
    cls: type[FolderDataset] = build.dataset_class(spec)
    splits = list(cls.splits) if cfg.splits == "all" else [spec.split]
    targets = []
    for split in splits:
        keys = list(cls.offered_keys(split))
        if cls.keys_select_entries:  # RobotCar: references select the correspondence pairs instead
            with_refs = split == spec.split and "image_ref" in spec.get("load_keys", ())
            keys = ["image", "image_ref"] if with_refs else [k for k in keys if k != "image_ref"]
        targets.append((split, keys))
    return targets


def check_dataset(cfg: DictConfig, spec: DictConfig, check: FileCheck, seen: set) -> list[Report]:
    """The reports of one dataset node; ``seen`` holds the splits already checked (ACDC's val and test
    nodes both read its val split)."""
    cls = build.dataset_class(spec)
    if not issubclass(cls, FolderDataset):  # the synthetic benchmark: generated, or read from its cache
        dataset = build.build_dataset(spec)
        return [check_synthetic(f"synthetic {dataset.domain} {dataset.split}", dataset)]
    reports = []
    for split, keys in folder_targets(cfg, spec):
        if (key := (cls.name, str(spec.root), split, tuple(keys))) in seen:
            continue
        seen.add(key)
        title = f"{cls.name} {split}" + " (pairs)" * ("image_ref" in keys and cls.keys_select_entries)
        listing = build.build_listing(spec, split, keys)
        reports.append(check_folder_split(cls, split, listing, check, keys, title=f"{title} [{spec.root}]"))
    return reports


def check_matching(cfg: DictConfig, check: FileCheck) -> list[Report]:
    """The matcher's data of ``align_data=…``: MegaDepth scene info, and the csv test set."""
    reports = []
    train = cfg.dataset.get("train")
    if train is not None and train._target_.endswith("MegaDepthPairs"):
        reports.append(
            check_megadepth_scenes(f"MegaDepth scene info [{train.root}]", Path(train.root), VAL_SCENES)
        )
    try:
        dataset = build.build_dataset(cfg.dataset.eval)
        reports.append(
            check_pairs_csv(f"{cfg.dataset.name} matching test [{dataset.csv_path}]", dataset, check)
        )
    except DatasetError as err:
        report = Report(f"{cfg.dataset.name} matching test")
        report.problems.append(Problem("missing", str(err)))
        reports.append(report)
    return reports


def run(cfg: DictConfig) -> list[Report]:
    """Check every split of the dataset (or, with ``align_data=…``, the matcher's data), printing each
    report as it is done, then the summary line."""
    check = FileCheck(bool(cfg.decode), bool(cfg.label_values), int(cfg.workers))
    start, reports, seen = time.perf_counter(), [], set()
    # align_data=… puts the matcher's train/eval pairs into the dataset node (segmentation data has no `eval`)
    if cfg.dataset.get("eval") is not None:
        checks = iter(check_matching(cfg, check))
    else:
        checks = (r for spec in dataset_specs(cfg) for r in check_dataset(cfg, spec, check, seen))
    for report in checks:
        print("\n".join(report.lines()), flush=True)
        reports.append(report)
    print(summary(reports, time.perf_counter() - start), flush=True)
    return reports


@entry_point("check_data")
def main(cfg: DictConfig) -> None:
    if any(r.problems for r in run(cfg)):
        sys.exit(1)


if __name__ == "__main__":
    main()
