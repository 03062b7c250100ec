"""The synthetic benchmark's method table: source-only, DAFormer, HRDA and DAFormer + MIC, each ± Refign.

    python -m scripts.bench_refign                          # every row, seeds 0 1 2
    python -m scripts.bench_refign --rows daformer daformer_refign --seeds 0
    python -m scripts.bench_refign --seeds 0 -- dataset.benchmark_seed=1   # another draw of the benchmark

Every row starts from the shipped source-only segmentor and trains the benchmark's 1000 steps; ``refign=on``
aligns with the shipped CPU-scale matcher, ``oracle`` with the ground-truth flow (Refign's upper bound here).
A preset of ``scripts/benchmark.py`` (one process per run, finished runs skipped, ``--jobs``, ``--wandb``);
extra Hydra overrides go after ``--``.
"""

from __future__ import annotations

import argparse

from scripts import benchmark

ROWS = {
    "source_only": ["uda=source_only", "refign=off"],
    "daformer": ["uda=daformer", "refign=off"],
    "daformer_refign": ["uda=daformer", "refign=on"],
    "daformer_refign_oracle": ["uda=daformer", "refign=on", "alignment=oracle"],  # the build loads the flow
    "hrda": ["uda=hrda", "refign=off"],
    "hrda_refign": ["uda=hrda", "refign=on"],
    # Masked Image Consistency with the benchmark's 8-px blocks (mic.block_size: 1/16 of the 128² crop)
    "daformer_mic": ["uda=daformer", "refign=off", "mic=on"],
    "daformer_refign_mic": ["uda=daformer", "refign=on", "mic=on"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    p.add_argument("--jobs", default="1")
    p.add_argument("--out", default=str(benchmark.ROOT / "outputs" / "bench_refign"))
    p.add_argument("--wandb", action="store_true", help="also log the table as a wandb run (offline)")
    args, common = p.parse_known_args()
    common = [c for c in common if c != "--"]
    argv = ["--seeds", *args.seeds, "--out", args.out, "--jobs", args.jobs, *["--wandb"] * args.wandb]
    argv += ["--common", *common]
    for row in args.rows:
        argv += ["--row", row, *ROWS[row]]
    benchmark.main(argv)


if __name__ == "__main__":
    main()
