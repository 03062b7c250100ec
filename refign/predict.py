"""python -m refign.predict checkpoint=PATH [dataset=acdc|dark_zurich|synthetic] — prediction files;
python -m refign.predict checkpoint=PATH input=IMAGE|FOLDER|VIDEO [out_dir=…] — predictions for your own files.

With ``input=`` (docs/tools.md#predict-files, ``refign.inference.files``): per image, at its own size and
brought to the scale the checkpoint was evaluated at, ``labelTrainIds/``, ``color/`` and ``overlay/`` PNGs;
per video ``overlay/<name>.mp4``. A file that cannot be read is named, skipped and counted; the others are
written, and the exit status is 1.

Without ``input=``, for every dataset under ``dataset.predict`` (docs/refign.md#test-server-export,
``refign.inference.export``): trainId and colour PNGs, ``overview.png`` and ``<name>_submission.zip`` in the
test server's layout. The server's numbers are the paper's; those ``refign.evaluate`` prints are validation.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from refign import build
from refign.engine.reproducibility import task_session
from refign.inference.export import export_datasets
from refign.inference.files import predict_inputs
from refign.task import entry_point, output_dir


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    if run(cfg, output_dir(cfg)).get("failed"):
        sys.exit(1)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Predictions and one archive per dataset under ``out_dir``; returns the archives by dataset name.
    With ``input=``: the predictions of the user's files; returns ``{"written": [...], "failed": [...]}``."""
    with task_session(cfg) as info:
        if info.distributed:
            raise RuntimeError("refign.predict runs on one process; launch it without torchrun")
        if cfg.input:
            model, short_side = build.build_predictor(cfg)
            model = model.to(info.device)
            args = (cfg.overwrite, cfg.overlay_alpha, cfg.video_frames)
            return predict_inputs(model, cfg.input, out_dir, info.device, short_side, *args)
        datasets = build.build_datasets(cfg, "predict")
        if not datasets:
            raise ValueError(f"dataset {cfg.dataset.name!r} has no 'predict' node (nothing to export)")
        model = build.build_inference_model(cfg).to(info.device)
        return export_datasets(model, datasets, out_dir, info.device, cfg.overwrite, cfg.overview_images)


if __name__ == "__main__":
    main()
