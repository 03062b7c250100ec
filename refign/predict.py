"""python -m refign.predict checkpoint=PATH [dataset=acdc|dark_zurich|synthetic] — prediction files.

For every dataset under ``dataset.predict`` (ACDC / Dark Zurich: the hidden-label *test* split; synthetic:
its labelled test split): trainId PNGs named after the inputs, colour PNGs and ``overview.png`` (image |
ground truth where the split has labels | prediction) for viewing, and ``<name>_submission.zip`` in the
test server's layout (``refign.export``). Upload the zip; the server's numbers are the paper's, the ones
``refign.evaluate`` prints are validation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from refign import build
from refign.engine import dist
from refign.export import DEFAULT_FORMAT, SERVER_FORMATS, make_archive, predict_dataset

log = logging.getLogger("refign.predict")


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Path]:
    """Predictions and one archive per dataset under ``out_dir``; returns the archives by dataset name."""
    with dist.session(cfg.trainer.device) as info:
        if info.distributed:
            raise RuntimeError("refign.predict runs on one process; launch it without torchrun")
        datasets = build.build_datasets(cfg, "predict")
        if not datasets:
            raise ValueError(f"dataset {cfg.dataset.name!r} has no 'predict' node (nothing to export)")
        model = build.build_inference_model(cfg).to(info.device)
        archives = {}
        for name, ds in datasets.items():
            files = predict_dataset(
                model, ds, out_dir / name, info.device, cfg.overwrite, cfg.overview_images
            )
            fmt = SERVER_FORMATS.get(type(ds).__name__, DEFAULT_FORMAT)
            archives[name] = make_archive(files, fmt, out_dir / f"{name}_submission.zip", cfg.overwrite)
            log.info(
                "%s: %d predictions in %s, archive %s%s",
                name,
                len(files),
                out_dir / name,
                archives[name],
                f" (upload it to {fmt.url})" * bool(fmt.url),
            )
        return archives


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(cfg.out_dir) if cfg.out_dir else Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
