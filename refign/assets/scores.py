"""The synthetic benchmark's shipped weights: where they are and how they are scored.

``segmentor_synthetic.pt`` is the source-only segmentor every synthetic UDA run starts from (the analogue of
the paper's ImageNet / Cityscapes initialisation) and ``uawarpc_small_synthetic.pt`` the CPU-scale matcher
that ``refign=on`` uses there. ``scripts/make_synthetic_assets.py`` reproduces both and records, in
``manifest.json``, the scores computed here; the test suite recomputes them from the shipped files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from refign import build
from refign.engine.dist import DistInfo
from refign.engine.evaluator import evaluate as evaluate_segmentor
from refign.task import compose

ASSETS = Path(__file__).resolve().parent
MANIFEST = ASSETS / "manifest.json"
SEGMENTOR_FILE = "segmentor_synthetic.pt"
MATCHER_FILE = "uawarpc_small_synthetic.pt"
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def segmentor_scores(path: str | Path, cache_dir: str | None = None) -> dict[str, float]:
    """Validation mIoU of a synthetic-benchmark segmentor file: source, target and each target condition."""
    extra = [f"paths.cache_dir={cache_dir}"] if cache_dir else []
    cfg = compose("train", ["uda=source_only", "refign=off", f"init_weights={path}", *extra])
    model = build.build_segmentor(cfg)
    scores = {}
    for name, dataset in build.build_datasets(cfg, "val").items():
        result = evaluate_segmentor(model, dataset, CPU, cfg.dataset.num_classes, desc=f"eval {name}")
        scores[f"{name}_val_mIoU"] = result["mIoU"]
        scores |= {f"{name}_val/{c}": v for c, v in result.get("per_condition", {}).items()}
    return scores


def matcher_config(path: str | Path | None, cache_dir: str | None = None):
    """The synthetic benchmark's align_train configuration, with ``path`` as the matcher's weights."""
    extra = [f"paths.cache_dir={cache_dir}"] if cache_dir else []
    return compose("align_train", ["pairs=synthetic", f"alignment.checkpoint={path or 'null'}", *extra])


def matcher_scores(path: str | Path, cache_dir: str | None = None) -> dict[str, float]:
    """PCK / AEPE of a synthetic matcher file on the synthetic test split, overall and per condition, how
    informative its certainty is (``certain50_epe_ratio``) and, as ``identity_*``, the zero flow's scores:
    the evaluation ``align_train mode=eval`` runs, without its speed (``pairs_per_s``, not a score)."""
    cfg = matcher_config(path, cache_dir)
    metrics, _ = build.build_matcher_eval(cfg, CPU)(build.build_matcher(cfg))
    return {k: v for k, v in metrics.items() if k != "pairs_per_s"}
