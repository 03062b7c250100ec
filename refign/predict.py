"""python -m refign.predict checkpoint=PATH [dataset=acdc|dark_zurich|synthetic] — prediction files;
python -m refign.predict checkpoint=PATH input=IMAGE|FOLDER|VIDEO [out_dir=…] — predictions for your own files.

With ``input=``: per image (a folder is searched recursively for every image type Pillow reads and for videos;
its other files are named and counted as left out), named after it and at
its own size, ``labelTrainIds/<name>.png``, ``color/<name>.png`` and ``overlay/<name>.png`` (the picture
blended with the class colours, and a legend of the classes present); per video, ``overlay/<name>.mp4``
(and every frame's PNGs with ``video_frames=true``). Pictures are brought to the scale the checkpoint was
evaluated at (``refign.inference.segment``; ``short_side=`` states another). A file that cannot be read is named,
skipped and counted; the others are written, and the exit status is 1.

Without ``input=``, for every dataset under ``dataset.predict`` (ACDC / Dark Zurich: the hidden-label *test* split; synthetic:
its labelled test split): trainId PNGs named after the inputs, colour PNGs and ``overview.png`` (image |
ground truth where the split has labels | prediction) for viewing, and ``<name>_submission.zip`` in the
test server's layout (``refign.inference.export``). Upload the zip; the server's numbers are the paper's, the ones
``refign.evaluate`` prints are validation.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from refign import build
from refign.engine.reproducibility import task_session
from refign.inference.export import export_datasets
from refign.inference.files import predict_inputs
from refign.task import entry_point


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Predictions and one archive per dataset under ``out_dir``; returns the archives by dataset name.
    With ``input=``: the predictions of the user's files; returns ``{"written": [...], "failed": [...]}``."""
    with task_session(cfg) as info:
        if info.distributed:
            raise RuntimeError("refign.predict runs on one process; launch it without torchrun")
        if cfg.input:
            model, short_side = build.build_predictor(cfg)
            return predict_inputs(
                model.to(info.device),
                cfg.input,
                out_dir,
                info.device,
                short_side,
                cfg.overwrite,
                cfg.overlay_alpha,
                cfg.video_frames,
            )
        datasets = build.build_datasets(cfg, "predict")
        if not datasets:
            raise ValueError(f"dataset {cfg.dataset.name!r} has no 'predict' node (nothing to export)")
        model = build.build_inference_model(cfg).to(info.device)
        return export_datasets(model, datasets, out_dir, info.device, cfg.overwrite, cfg.overview_images)


@entry_point("predict")
def main(cfg: DictConfig) -> None:
    result = run(cfg, Path(cfg.out_dir) if cfg.out_dir else Path(HydraConfig.get().runtime.output_dir))
    if result.get("failed"):
        sys.exit(1)


if __name__ == "__main__":
    main()
