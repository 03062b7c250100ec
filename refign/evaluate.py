"""python -m refign.evaluate checkpoint=PATH [dataset=… split=val|test] — mIoU of a training checkpoint.

By default the network is rebuilt from the configuration stored in the checkpoint, so only the dataset
needs to be named; ``use_checkpoint_config=false`` builds it from this composition instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from refign import build
from refign.engine import checkpoint, dist
from refign.engine.evaluator import evaluate
from refign.models.segmentor import Segmentor
from refign.models.weights import load_strict

log = logging.getLogger("refign.evaluate")
MODEL_NODES = ("backbone", "head", "model")


def load_model(cfg: DictConfig) -> Segmentor:
    """The inference network of a training checkpoint: only the segmentor is rebuilt (no method, no matcher)
    and its weights are loaded strictly."""
    state = checkpoint.load(cfg.checkpoint)
    weights = checkpoint.segmentor_state(state, str(cfg.checkpoint))
    if cfg.use_checkpoint_config and state.get("config"):
        stored = OmegaConf.create(state["config"])
        with open_dict(cfg):
            for node in MODEL_NODES:
                cfg[node] = stored[node]
            cfg.dataset.num_classes = stored.dataset.num_classes
    with open_dict(cfg):  # every weight comes from the checkpoint: do not read the initialisation files
        cfg.backbone.pretrained = None
        cfg.init_weights = None
    model = build.build_segmentor(cfg)
    load_strict(model, weights, str(cfg.checkpoint))
    return model


def run(cfg: DictConfig, out_dir: Path) -> dict:
    info = dist.setup(cfg.trainer.device)
    try:
        model = load_model(cfg).to(info.device)
        datasets = build.build_datasets(cfg, cfg.split)
        if not datasets:
            raise ValueError(f"dataset {cfg.dataset.name!r} has no '{cfg.split}' split with labels")
        results = {
            name: evaluate(
                model,
                ds,
                info,
                cfg.trainer.eval_batch_size,
                cfg.trainer.num_workers,
                cfg.dataset.over_present_classes,
                desc=f"eval {name}",
            )
            for name, ds in datasets.items()
        }
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
            for name, r in results.items():
                conds = ", ".join(f"{c} {v:.2f}" for c, v in r.get("per_condition", {}).items())
                print(f"{name}-{cfg.split} mIoU: {r['mIoU']:.2f}" + (f"  ({conds})" if conds else ""))
        return results
    finally:
        dist.teardown()


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
