"""The matcher (``refign.align_train``, ``refign.align``): the UAWarpC network, its pair datasets, its PCK
evaluation and its warp-consistency trainer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from hydra.utils import get_class, get_object
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import Dataset

from refign.alignment.network import AlignmentNetwork
from refign.alignment.training.method import MatcherTraining, matcher_eval
from refign.alignment.training.pairs import WarpConsistencyPairs
from refign.alignment.training.synthetic_warps import WarpConfig
from refign.build.common import build_logger, build_train_step, instantiate, training_settings
from refign.data.datasets.synthetic import SyntheticDataset
from refign.data.loader import step_loader
from refign.engine.dist import DistInfo
from refign.engine.trainer import Trainer
from refign.utils.errors import ConfigError

log = logging.getLogger(__name__)


def trained_matcher(cfg: DictConfig, user: str) -> torch.nn.Module:
    """The configured matcher, a trained one (``alignment.checkpoint``) or the ground truth (``alignment=oracle``);
    ``user`` (``refign.align needs``, ``refign=on aligns with``) refuses an untrained one."""
    if not needs_gt_flow(cfg) and not cfg.alignment.get("checkpoint"):
        raise ConfigError(
            f"{user} a trained matcher: set alignment.checkpoint=<file> (the released uawarpc_megadepth.ckpt "
            "with alignment=uawarpc, or one from python -m refign.align_train)"
        )
    return instantiate(cfg.alignment)


def build_aligner(cfg: DictConfig) -> torch.nn.Module:
    """``refign.align``'s matcher in eval mode (on the synthetic benchmark the shipped CPU-scale one)."""
    return trained_matcher(cfg, "refign.align needs").eval()


def build_pair_sets(cfg: DictConfig, split: str) -> dict[str, Dataset]:
    """The sets of ``dataset.<split>`` loading target and reference, and on the synthetic benchmark's
    target domain the ground-truth flow too."""
    sets = {}
    for name, spec in (cfg.dataset.get(split) or {}).items():
        keys = ["image", "image_ref"]
        if issubclass(get_class(spec._target_), SyntheticDataset) and spec.get("domain") == "target":
            keys += ["flow", "flow_valid"]
        sets[name] = instantiate(spec, load_keys=keys)
    if not sets:
        raise ConfigError(f"dataset {cfg.dataset.name!r} has no '{split}' sets to take pairs from")
    return sets


def dataset_pairs(cfg: DictConfig) -> Iterator[tuple[str, dict]]:
    """``refign.align``'s pairs without ``target=``/``reference=``: the first ``num_pairs`` of each set of
    ``dataset.<split>``, named ``<set>/<file stem>``."""
    for set_name, dataset in build_pair_sets(cfg, cfg.split).items():
        for i in range(min(cfg.num_pairs, len(dataset))):
            sample = dataset[i]
            yield f"{set_name}/{Path(sample['filename']).stem}", sample


def stage_cfg(cfg: DictConfig) -> DictConfig:
    """The settings of the selected matcher training stage (``stage=N`` → ``stages.stageN``)."""
    key = cfg.stage_key
    if key not in cfg.stages:
        raise ValueError(f"stage={cfg.stage!r}: no '{key}' in stages (have {list(cfg.stages)})")
    return cfg.stages[key]


def build_matcher(cfg: DictConfig) -> AlignmentNetwork:
    """The matcher of ``cfg.alignment``; for ``mode=eval`` without ``alignment.checkpoint``, the pairs'
    shipped weights (``pairs.shipped_checkpoint``)."""
    if cfg.mode == "eval" and not cfg.alignment.checkpoint:
        shipped = cfg.pairs.get("shipped_checkpoint")
        if not shipped:
            raise ValueError(
                f"mode=eval needs alignment.checkpoint=<file> (pairs={cfg.pairs.name} ships none)"
            )
        log.info("mode=eval without alignment.checkpoint: evaluating the shipped matcher %s", shipped)
        with open_dict(cfg):
            cfg.alignment.checkpoint = shipped
    return instantiate(cfg.alignment)


def build_matcher_eval(cfg: DictConfig, info: DistInfo):
    """PCK evaluation of the matcher on ``pairs.eval`` (with the zero-flow baseline on the synthetic data)."""
    data = cfg.pairs
    return matcher_eval(instantiate(data.eval), data.name, info.device, data.name == "synthetic")


def build_matcher_trainer(cfg: DictConfig, run_dir: Path, info: DistInfo) -> Trainer:
    """Warp-consistency training of the configured matcher (``build_matcher``) for the selected stage, on the
    engine."""
    network = build_matcher(cfg)
    loop = training_settings(cfg, "pairs")
    stage = stage_cfg(cfg)
    pairs = WarpConsistencyPairs(
        instantiate(cfg.pairs.train),
        WarpConfig(**OmegaConf.to_container(stage.warps)),
        swap_p=cfg.swap_p,
        crop_size=cfg.pairs.crop_size,
        min_valid_fraction=cfg.min_valid_fraction,
    )
    method = MatcherTraining(network, stage.visibility_mask, cfg.loss_weighting).to(info.device)
    step = build_train_step(cfg, method, info, settings=loop)

    def batches(start: int) -> Iterator[dict]:
        return step_loader(pairs, cfg.pairs.batch_size, info, cfg.seed, start, cfg.trainer.num_workers)

    return Trainer(
        loop,
        step,
        batches=batches,
        evaluate=build_matcher_eval(cfg, info),
        dist_info=info,
        run_dir=run_dir,
        logger=build_logger(cfg, run_dir, info, "align_train", step.optimizer),
        resolved_config=OmegaConf.to_container(cfg, resolve=True),
        # the matcher's own state dict under the official top-level names, as before the engine ran it:
        # ``alignment.checkpoint=<this file>`` and ``read_state_dict`` read it directly
        checkpoint_extras=lambda: {"state_dict": network.state_dict(), "stage": cfg.stage},
    )


def needs_gt_flow(cfg: DictConfig) -> bool:
    """Whether the configured aligner reads the ground-truth flow (``alignment=oracle``)."""
    return bool(getattr(get_object(cfg.alignment._target_), "needs_gt_flow", False))
