"""python -m refign.evaluate checkpoint=PATH [dataset=… split=val|test] — mIoU of a training checkpoint.

By default the network is rebuilt from the configuration stored in the checkpoint, so only the dataset
needs to be named; ``use_checkpoint_config=false`` builds it from this composition instead.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from refign import build
from refign.engine.reproducibility import task_session
from refign.task import entry_point, output_dir

log = logging.getLogger("refign.evaluate")


@entry_point("eval")
def main(cfg: DictConfig) -> None:
    run(cfg, output_dir(cfg))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Build the inference network and the split's evaluation → evaluate → write ``eval.json``."""
    with task_session(cfg) as info:
        model = build.build_inference_model(cfg).to(info.device)
        results, flat = build.build_segmentation_eval(cfg, info, cfg.split, required=True)(model)
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
            for name, r in results.items():
                conds = ", ".join(f"{c} {v:.2f}" for c, v in r.get("per_condition", {}).items())
                print(f"{name}-{cfg.split} mIoU: {r['mIoU']:.2f}" + (f"  ({conds})" if conds else ""))
        if cfg.logger.wandb:  # a wandb run of job type "evaluate": the scalars, per-class table and summary
            logger = build.build_logger(cfg, out_dir, info, "evaluate")
            logger.log_eval(results, flat, 0)
            logger.close()
        return results


if __name__ == "__main__":
    main()
