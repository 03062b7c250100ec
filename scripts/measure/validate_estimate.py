"""The memory estimate (``python -m refign.estimate``) next to the memory a real CPU step takes.

    python -m scripts.measure.validate_estimate                   # the synthetic-scale configurations
    python -m scripts.measure.validate_estimate paper_daformer_b1 --max-rss-gb 20 --lock /tmp/heavy.lock

For each configuration a child process composes it and traces the step with fake tensors (fp32; the
estimate's ``peak - before_step``: what a steady step adds to the networks, the batch and the optimiser
state), then builds the same method for real (random weights: no file is read) and runs two real CPU
training steps on a random batch of the configured size (blocky random labels, as
``scripts/measure/bench_step.py``). Measured: the rise of the process's peak resident set during the second step
(``VmHWM``, reset through ``/proc/self/clear_refs``) over its resident set before that step, after
``malloc_trim`` has returned freed memory. The first step is a warm-up: it creates the optimiser's state
and initialises the CPU libraries (thread pools, oneDNN's primitive caches), which is not tensor memory;
its rise over the resident set before it is printed too, as the wider measure (the step's activations peak
before the optimiser's state exists, so the same estimate applies, plus what the libraries allocate).
The child runs with a fixed glibc mmap threshold (``MALLOC_MMAP_THRESHOLD_``): with glibc's dynamic
threshold, freed blocks of up to 32 MiB stay in its heap and their fragmentation counts in the resident
set (docs/estimate.md#validation shows both). Refign's configurations align on every step
(``refine.adapt_to_ref=false``), as the estimate traces them.

A watchdog kills any child whose memory passes ``--max-rss-gb``; ``--lock FILE`` runs each paper-scale child
(many GiB) under an exclusive ``flock`` on FILE, on a machine shared with other heavy jobs. Prints one row per
configuration.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import random
import re
import sys
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig

from refign import build
from refign.engine.dist import DistInfo
from refign.engine.step import TrainStep
from refign.estimate.trace import aligning, trace_step, traceable, untrained
from scripts.measure.common import GIB, compose_here, locked, random_batch, run_watched

MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed
ALIGN_EVERY_STEP = ["refine.adapt_to_ref=false"]
CONFIGS = {
    "synthetic_daformer_refign": ["uda=daformer", "refign=on", *ALIGN_EVERY_STEP],
    "synthetic_hrda_refign_mic": ["uda=hrda", "refign=on", "mic=on", *ALIGN_EVERY_STEP],
    "paper_daformer_b1": ["experiment=acdc_refign_daformer", "dataset.batch_size=1", *ALIGN_EVERY_STEP],
    "paper_hrda_star_b1": ["experiment=acdc_refign_hrda_star", "dataset.batch_size=1", *ALIGN_EVERY_STEP],
}
SYNTHETIC = ["synthetic_daformer_refign", "synthetic_hrda_refign_mic"]


def status_kib(key: str, pid: str = "self") -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def peak_rise(step: TrainStep, batch: dict[str, torch.Tensor], index: int) -> int:
    """Bytes the peak resident set rises by during one real step, over the resident set before it (freed
    memory returned to the system first, so that it does not hide the step's own allocations)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from now
    step(batch, index)
    return (status_kib("VmHWM") - before) * 1024


def measure(cfg: DictConfig) -> tuple[int, int]:
    """The peak rises of the first and the second of two real CPU steps (see ``peak_rise``)."""
    torch.manual_seed(0)
    random.seed(0)
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    method = build.build_method(untrained(cfg))
    step = build.build_train_step(cfg, method, info, "32")
    method.train()
    batch = random_batch(cfg, torch.Generator().manual_seed(0))
    first = peak_rise(step, batch, 0)  # also creates the optimiser's state and initialises the libraries
    return first, peak_rise(step, batch, 1)


def child(name: str) -> None:
    """Estimate, then measure, one configuration; prints its result as one JSON line."""
    cfg = traceable(aligning(compose_here("estimate", CONFIGS[name])))  # the same fused AdamW and correlation
    est = trace_step(cfg, "32")
    gc.collect()
    first, second = measure(cfg)
    print(
        json.dumps(
            {
                "name": name,
                "estimated": est.peak - est.before_step,
                "measured": second,
                "first_step": first,
                "trace_s": est.seconds,
            }
        )
    )


def run_child(name: str, max_rss_gb: float, lock: Path | None) -> dict:
    """One child, killed when its memory passes ``max_rss_gb``; paper-scale ones under ``lock`` (the
    synthetic ones stay far below 3 GiB)."""
    with tempfile.TemporaryDirectory() as tmp, locked(None if name in SYNTHETIC else lock):
        log = Path(tmp) / "child.log"
        cmd = [sys.executable, "-m", "scripts.measure.validate_estimate", "--child", name]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
        phase = run_watched(cmd, log, max_rss_gb * GIB, env=env)
        text = log.read_text()
    results = [line for line in text.splitlines() if line.startswith('{"name": ')]  # not its warnings
    if phase.status != "ok" or not results:
        print(text[-3000:], file=sys.stderr)  # the child's error
        return {"name": name, "error": phase.status}
    return json.loads(results[-1])


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
        print(
            f"| {name} | {est:.3f} | {second:.3f} | {est / second:.2f} | {first:.3f} | {est / first:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
