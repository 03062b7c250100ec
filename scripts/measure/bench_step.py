"""Training-step throughput of DAFormer, HRDA and both with Refign, at the paper's scale, on this machine.

    python -m scripts.measure.bench_step                        # paper scale, precision 32, on CUDA if any
    python -m scripts.measure.bench_step --precision 32 bf16 fp16 --steps 50
    python -m scripts.measure.bench_step --scale small --steps 3 --warmup 1   # the same code on CPU, ~1 min

Paper scale composes the Cityscapes→ACDC experiments (``refign=off`` for the base rows), ``--scale small``
the synthetic benchmark's CPU-sized model; random weights where they expect files, random batches straight
into the training step of ``python -m refign.train``. Refign keeps its official 50 % adapt-to-reference steps;
the row ``daformer_refign_every_step`` aligns on every step. Peak memory: CUDA's ``max_memory_allocated`` per
row on a GPU, the process's peak resident set (cumulative over rows) on CPU. docs/gpu.md says more.
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from refign import build
from refign.engine.dist import DistInfo, session
from scripts.measure.common import compose_here, random_batch, seeded_method, write_random_weights

STEPS_PER_RUN = 40_000
# the configuration of each method per scale: the official Cityscapes→ACDC experiments, or the synthetic
# benchmark's CPU-sized defaults with the method chosen
METHODS = {
    "paper": {"daformer": "experiment=acdc_refign_daformer", "hrda": "experiment=acdc_refign_hrda_star"},
    "small": {"daformer": "uda=daformer", "hrda": "uda=hrda"},
}
# row → (its base row and method, its overrides): Refign as configured (the official adapt_to_ref: half of
# the steps train on the reference image and align nothing), or aligning on every step (the worst case)
ROWS = {
    "daformer": ("daformer", ["refign=off"]),
    "daformer_refign": ("daformer", ["refign=on"]),
    "daformer_refign_every_step": ("daformer", ["refign=on", "refine.adapt_to_ref=false"]),
    "hrda": ("hrda", ["refign=off"]),
    "hrda_refign": ("hrda", ["refign=on"]),
}
DEFAULT_ROWS = ["daformer", "daformer_refign", "hrda", "hrda_refign"]


def compose_row(row: str, scale: str, weights_dir: Path, extra: list[str]) -> DictConfig:
    """The row's training configuration, its weight files resolved into ``weights_dir``."""
    method, switches = ROWS[row]
    weights = [f"paths.pretrained_dir={weights_dir}", f"paths.assets_dir={weights_dir}"]
    return compose_here("train", [METHODS[scale][method], *switches, *weights, *extra])


def time_row(cfg: DictConfig, precision: str, info: DistInfo, steps: int, warmup: int, clock: str) -> dict:
    """Steps per second and peak memory of ``steps`` training steps after ``warmup`` ones, by the wall clock
    or (``clock="cpu"``) by the CPU time of the process."""
    method = seeded_method(cfg).to(info.device)
    with open_dict(cfg):
        cfg.trainer.max_steps = STEPS_PER_RUN
    step = build.build_train_step(cfg, method, info, precision)
    batch = random_batch(cfg, torch.Generator().manual_seed(0), info.device)
    cuda = info.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(info.device)
    for index in range(warmup):
        step(batch, index)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    if cuda:
        torch.cuda.synchronize(info.device)
    start = timer()
    for index in range(warmup, warmup + steps):
        step(batch, index)
    if cuda:
        torch.cuda.synchronize(info.device)
    elapsed = timer() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated(info.device) / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"steps_per_s": steps / elapsed, "peak_gib": peak}


def device_name(info: DistInfo) -> str:
    if info.device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(info.device)}"
    return f"CPU ({torch.get_num_threads()} threads)"


def format_table(results: list[dict], memory: str) -> str:
    """A Markdown table; ``Refign/base`` is the step-time ratio of a Refign row to its base row."""
    speed = {(r["precision"], r["row"]): r["steps_per_s"] for r in results}
    lines = [
        f"| precision | method | steps/s | s / {STEPS_PER_RUN // 1000}k steps | h / {STEPS_PER_RUN // 1000}k steps "
        f"| {memory} | Refign/base |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = ROWS[r["row"]][0]
        base_speed = speed.get((r["precision"], base)) if r["row"] != base else None
        ratio = f"{base_speed / r['steps_per_s']:.2f}×" if base_speed else "–"
        total = STEPS_PER_RUN / r["steps_per_s"]
        lines.append(
            f"| {r['precision']} | {r['row']} | {r['steps_per_s']:.3f} | {total:.0f} | {total / 3600:.1f} "
            f"| {r['peak_gib']:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=["paper", "small"], default="paper")
    p.add_argument("--precision", nargs="+", choices=["32", "bf16", "fp16"], default=["32"])
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=DEFAULT_ROWS)
    p.add_argument("--steps", type=int, default=20, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, cuDNN, kernels)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: the process's CPU time (all threads summed) instead of the wall clock, for a CPU run on a "
        "shared machine; with OMP_NUM_THREADS=1 it is the time of one otherwise idle core",
    )
    args, extra = p.parse_known_args()
    extra = [o for o in extra if o != "--"]
    with session(args.device) as info:
        bench(args, extra, info)


def bench(args: argparse.Namespace, extra: list[str], info: DistInfo) -> None:
    """Every requested row at every precision, printed as it finishes and as one table at the end."""
    if args.clock == "cpu" and info.device.type == "cuda":
        raise SystemExit("--clock cpu measures host CPU time: it says nothing about a GPU step (use wall)")
    memory = "peak GiB (CUDA allocated)" if info.device.type == "cuda" else "peak GiB (CPU RSS, cumulative)"
    print(
        f"device: {device_name(info)}; scale: {args.scale}; {args.steps} steps after {args.warmup}",
        flush=True,
    )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precision:
            if precision == "fp16" and info.device.type != "cuda":
                print("precision fp16 skipped: float16 autocast with a GradScaler is a CUDA mode", flush=True)
                continue
            for row in args.rows:
                cfg = compose_row(row, args.scale, Path(tmp), extra)
                write_random_weights(cfg)
                r = time_row(cfg, precision, info, args.steps, args.warmup, args.clock)
                results.append({"precision": precision, "row": row, **r})
                print(f"{precision:>4} {row:>16}: {r['steps_per_s']:.3f} steps/s", flush=True)
                gc.collect()
                if info.device.type == "cuda":
                    torch.cuda.empty_cache()
    print(f"\n{device_name(info)}, scale {args.scale}, {args.clock} clock\n{format_table(results, memory)}")


if __name__ == "__main__":
    main()
