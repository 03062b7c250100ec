"""Training-step time of a self-training method with and without Refign, measured in one process.

    python scripts/bench_refign_overhead.py [--steps 40] [-- hydra overrides]

All variants train the same configuration (default: DAFormer on the synthetic benchmark, from its shipped
pretrained start, with its shipped CPU-scale matcher) on the same batches, one after the other in this process:
without Refign, with Refign as configured (the official ``adapt_to_ref``: half of the steps train on the reference
image and skip the alignment), and with Refign aligning and refining on every step (``adapt_to_ref=false``, the
worst case). The ratios are of mean step times after a warm-up (a mean, since the configured variant alternates cheap
and expensive steps).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from refign import build
from refign.data.loader import merge_domains, step_loader
from refign.engine.dist import setup

ROOT = Path(__file__).resolve().parents[1]


def step_times(cfg, steps: int, warmup: int) -> list[float]:
    info = setup("cpu")
    torch.manual_seed(0)
    method = build.build_method(cfg).train()
    source, target = build.build_train_sets(cfg)
    train_step = build.build_train_step(cfg, method, info, "32")
    src = step_loader(source, cfg.dataset.batch_size, info, 0, 0, 0)
    trg = step_loader(target, cfg.dataset.batch_size, info, 1, 0, 0)
    times = []
    for step in range(warmup + steps):
        batch = merge_domains(next(src), next(trg), info.device)
        start = time.perf_counter()
        train_step(batch, step)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=4)
    args, overrides = p.parse_known_args()
    overrides = [o for o in overrides if o != "--"] or ["uda=daformer"]
    variants = {
        "without Refign": [*overrides, "refign=off"],
        "with Refign": [*overrides, "refign=on"],
        "with Refign, every step": [*overrides, "refign=on", "refine.adapt_to_ref=false"],
    }
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfgs = {name: compose("train", overrides=o) for name, o in variants.items()}
    means = {}
    for name, cfg in cfgs.items():
        means[name] = statistics.mean(step_times(cfg, args.steps, args.warmup))
        print(f"{name:>24}: {means[name] * 1000:.0f} ms/step (mean of {args.steps})", flush=True)
    base = means["without Refign"]
    plain = cfgs["without Refign"]
    print(
        f"setting: {' '.join(overrides)}, crops {plain.dataset.crop_size}, {torch.get_num_threads()} threads"
    )
    for name in ("with Refign", "with Refign, every step"):
        print(
            f"Refign step-time ratio ({name.removeprefix('with Refign').strip(', ') or 'as configured'}): "
            f"{means[name] / base:.2f}×"
        )


if __name__ == "__main__":
    main()
