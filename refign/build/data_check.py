"""The data check (``refign.check_data``): every dataset node a composition names, walked split by split
through the dataset classes' own listings (``refign.data.check`` checks the files), and the matcher's data."""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from refign.build.common import instantiate
from refign.data.check import (
    FileCheck,
    Problem,
    Report,
    check_folder_split,
    check_megadepth_scenes,
    check_pairs_csv,
    check_synthetic,
)
from refign.data.datasets.base import FolderDataset
from refign.data.datasets.megadepth import VAL_SCENES, MegaDepthPairs
from refign.data.datasets.synthetic import SyntheticDataset
from refign.data.io import DatasetError

NODES = ("train_source", "train_target", "val", "test", "predict")


def dataset_specs(cfg: DictConfig) -> list[DictConfig]:
    """Every dataset node of ``cfg.dataset`` (training, validation, test, predict), each once."""
    specs = {}  # by their resolved YAML, in node order
    for node in NODES:
        value = cfg.dataset.get(node)
        for spec in ([value] if node.startswith("train") else (value or {}).values()) if value else []:
            specs.setdefault(OmegaConf.to_yaml(spec, resolve=True), spec)
    return list(specs.values())


def folder_targets(cfg: DictConfig, spec: DictConfig) -> list[tuple[str, list[str]]]:
    """``(split, keys)`` to check for a real dataset's node: every file its split offers (ACDC's test
    references too, which predict does not load); with ``splits=all`` every split of the dataset."""
    cls: type[FolderDataset] = get_class(spec._target_)
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
    cls = get_class(spec._target_)
    if not issubclass(cls, FolderDataset):  # the synthetic benchmark: generated, or read from its cache
        dataset = instantiate(spec)
        return [check_synthetic(f"synthetic {dataset.domain} {dataset.split}", dataset)]
    reports = []
    for split, keys in folder_targets(cfg, spec):
        if (key := (cls.name, str(spec.root), split, tuple(keys))) in seen:
            continue
        seen.add(key)
        title = f"{cls.name} {split}" + " (pairs)" * ("image_ref" in keys and cls.keys_select_entries)
        listing = build_listing(spec, split, keys)
        reports.append(check_folder_split(cls, split, listing, check, keys, title=f"{title} [{spec.root}]"))
    return reports


def check_matching(cfg: DictConfig, check: FileCheck) -> list[Report]:
    """The matcher's pairs of ``pairs=…``: MegaDepth's scene info, a csv test set (MegaDepth, RobotCar), or
    the synthetic benchmark's generated train and test pairs."""
    name, reports = cfg.pairs.name, []
    for spec in (cfg.pairs.get("train"), cfg.pairs.eval):
        if spec is None:
            continue
        cls = get_class(spec._target_)
        if issubclass(cls, SyntheticDataset):
            dataset = instantiate(spec)
            reports.append(check_synthetic(f"{name} matching {dataset.split}", dataset))
        elif issubclass(cls, MegaDepthPairs):
            reports.append(
                check_megadepth_scenes(f"MegaDepth scene info [{spec.root}]", Path(spec.root), VAL_SCENES)
            )
        else:
            try:
                dataset = instantiate(spec)
                reports.append(check_pairs_csv(f"{name} matching test [{dataset.csv_path}]", dataset, check))
            except DatasetError as err:
                report = Report(f"{name} matching test")
                report.problems.append(Problem("missing", str(err)))
                reports.append(report)
    return reports


def build_listing(spec: DictConfig, split: str, keys: list[str]):
    """``conditions -> dataset``: a real dataset's split listed with the files of ``keys``, without the
    loader's pairing check, resize or transform (``refign.check_data`` reports every gap itself)."""

    def listing(conditions: list[str] | None) -> Dataset:
        return instantiate(
            spec,
            split=split,
            load_keys=keys,
            conditions=conditions,
            check_pairs=False,
            dims=None,
            transform=None,
        )

    return listing
