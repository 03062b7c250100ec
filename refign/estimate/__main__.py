"""python -m refign.estimate [experiment=…] [trainer.precision=32|bf16|fp16] [any override] — the peak GPU
memory and the FLOPs of one training step, estimated without a GPU (docs/estimate.md): traced with fake
tensors (``trace``), printed with what fits and a projected time (``report``), written to ``estimate.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from refign.engine.reproducibility import import_targets
from refign.engine.step import AUTO16, PRECISIONS
from refign.estimate.report import refign_ratio, report
from refign.estimate.trace import aligning, trace_step
from refign.task import entry_point, output_dir


@entry_point("estimate")
def main(cfg: DictConfig) -> None:
    run(cfg, output_dir(cfg))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Trace the composed run, print the report, write estimate.json to out_dir."""
    # the GPU estimated for (A100, H100, RTX 30/40) supports bf16: what ``auto16`` picks there
    precision = "bf16" if str(cfg.trainer.precision) == AUTO16 else str(cfg.trainer.precision)
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision must be one of {list(PRECISIONS)}, got {precision!r}")
    import_targets(cfg)
    est = trace_step(aligning(cfg), precision)
    print(report(cfg, est), flush=True)
    result = {**asdict(est), "refign_flop_ratio": refign_ratio(est)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "estimate.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
