"""The memory estimate (``python -m refign.estimate``) next to the memory a real CPU step takes.

    python -m scripts.measure.validate_estimate                   # the synthetic-scale configurations
    python -m scripts.measure.validate_estimate paper_daformer_b1 --max-rss-gb 20 --lock /tmp/heavy.lock

Each configuration in a watched child process: the estimate's ``peak - before_step`` (fp32) beside the rise of
the peak resident set during the second of two real CPU steps on a random batch (and during the first, the
warm-up, the wider measure), glibc's mmap threshold fixed; Refign aligning on every step, as the estimate
traces it. docs/estimate.md#validation says how and why; one row per configuration.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from refign import build
from refign.estimate.trace import aligning, trace_step, traceable, untrained
from scripts.measure.common import (
    CPU,
    GIB,
    ChildError,
    compose_here,
    locked,
    peak_rise,
    random_batch,
    run_json_child,
    seeded_method,
)

MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed
ALIGN_EVERY_STEP = ["refine.adapt_to_ref=false"]
CONFIGS = {
    "synthetic_daformer_refign": ["uda=daformer", "refign=on", *ALIGN_EVERY_STEP],
    "synthetic_hrda_refign_mic": ["uda=hrda", "refign=on", "mic=on", *ALIGN_EVERY_STEP],
    "paper_daformer_b1": ["experiment=acdc_refign_daformer", "dataset.batch_size=1", *ALIGN_EVERY_STEP],
    "paper_hrda_star_b1": ["experiment=acdc_refign_hrda_star", "dataset.batch_size=1", *ALIGN_EVERY_STEP],
}
SYNTHETIC = ["synthetic_daformer_refign", "synthetic_hrda_refign_mic"]


def measure(cfg: DictConfig) -> tuple[int, int]:
    """The peak rises of the first and the second of two real CPU steps (see ``peak_rise``)."""
    method = seeded_method(untrained(cfg))
    step = build.build_train_step(cfg, method, CPU, "32")
    batch = random_batch(cfg, torch.Generator().manual_seed(0))
    first = peak_rise(step, batch, 0)  # also creates the optimiser's state and initialises the libraries
    return first, peak_rise(step, batch, 1)


def child(name: str) -> None:
    """Estimate, then measure, one configuration; prints its result as one JSON line."""
    cfg = traceable(aligning(compose_here("estimate", CONFIGS[name])))  # the same fused AdamW and correlation
    est = trace_step(cfg, "32")
    gc.collect()
    first, second = measure(cfg)
    result = {"name": name, "estimated": est.peak - est.before_step, "measured": second, "first_step": first}
    print(json.dumps({**result, "trace_s": est.seconds}))


def run_child(name: str, max_rss_gb: float, lock: Path | None) -> dict:
    """One child; paper-scale ones under ``lock`` (the synthetic ones stay far below 3 GiB)."""
    with locked(None if name in SYNTHETIC else lock):
        try:
            return run_json_child("scripts.measure.validate_estimate", [name], max_rss_gb, MMAP_THRESHOLD)
        except ChildError as err:
            print(err, file=sys.stderr)  # the child's error
            return {"name": name, "error": err.status}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"of {', '.join(CONFIGS)} (default: the synthetic ones)"
    )
    p.add_argument("--max-rss-gb", type=float, default=20.0, help="the watchdog's limit per child (GiB)")
    p.add_argument("--lock", type=Path, default=None, help="flock this file around each paper-scale child")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child)
    unknown = set(args.names) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configuration(s) {sorted(unknown)}: choose from {', '.join(CONFIGS)}")
    print(
        "| configuration | estimated GiB | measured GiB (CPU RSS rise) | estimate / measured "
        "| first step's rise GiB | estimate / first step's |"
    )
    print("|---|---|---|---|---|---|", flush=True)
    for name in args.names or SYNTHETIC:
        r = run_child(name, args.max_rss_gb, args.lock)
        if "error" in r:
            print(f"| {name} | – | {r['error']} | – | – | – |", flush=True)
            continue
        est, second, first = (r[k] / GIB for k in ("estimated", "measured", "first_step"))
        row = f"| {name} | {est:.3f} | {second:.3f} | {est / second:.2f} | {first:.3f} | {est / first:.2f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
