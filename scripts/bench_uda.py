"""Source-only vs. the self-training methods on the synthetic benchmark, several seeds, one table.

    python scripts/bench_uda.py                      # source-only and DAFormer, seeds 0 1 2
    python scripts/bench_uda.py --methods source_only dacs daformer hrda --seeds 0 1 2 3 4

A preset of ``scripts/benchmark.py`` (which runs each seed as its own training process, skips finished runs
and prints mean ± std of source-val/target-val mIoU and minutes per run); extra Hydra overrides go after
``--``, e.g. ``-- trainer.max_steps=500``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["source_only", "daformer"])
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    p.add_argument("--out", default=str(benchmark.ROOT / "outputs" / "bench_uda"))
    args, common = p.parse_known_args()
    common = [c for c in common if c != "--"]
    argv = ["--seeds", *args.seeds, "--out", args.out, "--common", *common]
    for method in args.methods:
        argv += ["--row", method, f"uda={method}"]
    benchmark.main(argv)


if __name__ == "__main__":
    main()
