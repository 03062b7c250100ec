"""python -m refign.align target=A reference=B [alignment=… alignment.checkpoint=…] [out_dir=…] — look at
an alignment (docs/tools.md#align: what each picture shows).

``target`` and ``reference`` are two images, or two folders whose images pair by relative path; without
them, the first ``num_pairs`` pairs of every set under ``dataset.<split>``. Per pair, named after the
target, the pictures of ``refign.inference.alignment``; ``alignment.json`` holds PCK-1/3/5/10 and the
average end-point error per pair and overall, where the ground-truth flow is known.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from refign import build
from refign.engine.reproducibility import task_session
from refign.inference.alignment import align_pairs, file_pairs
from refign.task import entry_point, output_dir

log = logging.getLogger("refign.align")


@entry_point("align")
def main(cfg: DictConfig) -> None:
    run(cfg, output_dir(cfg))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Build the matcher → list the pairs → align, draw and save each → ``alignment.json``; returns its content."""
    if (cfg.target is None) != (cfg.reference is None):
        raise ValueError("give both target=… and reference=… (or neither, for the dataset's pairs)")
    if (out_dir / "alignment.json").exists() and not cfg.overwrite:
        raise FileExistsError(
            f"{out_dir} holds an alignment already; choose another out_dir or set overwrite=true"
        )
    with task_session(cfg) as info:
        matcher = build.build_aligner(cfg).to(info.device)
        pairs = file_pairs(cfg.target, cfg.reference, cfg.size) if cfg.target else build.dataset_pairs(cfg)
        summary = align_pairs(matcher, pairs, out_dir, info.device)
        summary["matcher"] = str(cfg.alignment.get("checkpoint") or cfg.alignment._target_)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "alignment.json").write_text(json.dumps(summary, indent=1))
        overall = summary.get("overall")
        log.info("%d pair(s) → %s%s", len(summary["pairs"]), out_dir, f"; {overall}" if overall else "")
        return summary


if __name__ == "__main__":
    main()
