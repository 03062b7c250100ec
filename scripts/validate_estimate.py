"""The memory estimate (``python -m refign.estimate``) next to the memory a real CPU step takes.

    python scripts/validate_estimate.py                              # the synthetic-scale configurations
    python scripts/validate_estimate.py paper_daformer_b1 --max-rss-gb 20

For each configuration a child process composes it and traces the step with fake tensors (fp32; the
estimate's ``peak - before_step``: what a steady step adds to the networks, the batch and the optimiser
state), then builds the same method for real (random weights: no file is read) and runs two real CPU
training steps on a random batch of the configured size (blocky random labels, as
``scripts/bench_step.py``). Measured: the rise of the process's peak resident set during the second step
(``VmHWM``, reset through ``/proc/self/clear_refs``) over its resident set before that step, after
``malloc_trim`` has returned freed memory. The first step is a warm-up: it creates the optimiser's state
and initialises the CPU libraries (thread pools, oneDNN's primitive caches), which is not tensor memory;
its rise over the resident set before it is printed too, as the wider measure (the step's activations peak
before the optimiser's state exists, so the same estimate applies, plus what the libraries allocate).
The child runs with a fixed glibc mmap threshold (``MALLOC_MMAP_THRESHOLD_``): with glibc's dynamic
threshold, freed blocks of up to 32 MiB stay in its heap and their fragmentation counts in the resident
set (docs/estimate.md#validation shows both). Refign's configurations align on every step
(``refine.adapt_to_ref=false``), as the estimate traces them.

Each paper-scale child runs alone under ``flock /tmp/refign-heavy.lock`` (its steps take many GiB), and a
watchdog kills any child whose resident set passes ``--max-rss-gb``. Prints one row per configuration.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import gc
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from refign import build  # noqa: E402
from refign.engine.dist import DistInfo  # noqa: E402
from refign.engine.step import TrainStep  # noqa: E402
from refign.estimate import aligning, trace_step, traceable  # noqa: E402

LOCK = "/tmp/refign-heavy.lock"
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed
ALIGN_EVERY_STEP = ["refine.adapt_to_ref=false"]
CONFIGS = {
    "synthetic_daformer_refign": ["uda=daformer", "refign=on", *ALIGN_EVERY_STEP],
    "synthetic_hrda_refign_mic": ["uda=hrda", "refign=on", "mic=on", *ALIGN_EVERY_STEP],
    "paper_daformer_b1": ["experiment=acdc_refign_daformer", "dataset.batch_size=1", *ALIGN_EVERY_STEP],
    "paper_hrda_star_b1": ["experiment=acdc_refign_hrda_star", "dataset.batch_size=1", *ALIGN_EVERY_STEP],
}
SYNTHETIC = ["synthetic_daformer_refign", "synthetic_hrda_refign_mic"]
GIB = 2**30


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("estimate", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
    return cfg


def status_kib(key: str, pid: str = "self") -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def random_batch(cfg: DictConfig, needs_target: bool) -> dict[str, torch.Tensor]:
    """Random images and labels of 32×32-pixel blocks of random classes, at the configured size."""
    g = torch.Generator().manual_seed(0)
    b, (h, w) = cfg.dataset.batch_size, cfg.dataset.crop_size
    coarse = torch.randint(0, cfg.dataset.num_classes, (b, 1, -(-h // 32), -(-w // 32)), generator=g)
    batch = {
        "image_src": torch.randn(b, 3, h, w, generator=g),
        "semantic_src": F.interpolate(coarse.float(), scale_factor=32, mode="nearest")[:, 0, :h, :w].long(),
    }
    if needs_target:
        batch["image_trg"] = torch.randn(b, 3, h, w, generator=g)
        if "image_ref" in build.target_load_keys(cfg):
            batch["image_ref"] = torch.randn(b, 3, h, w, generator=g)
    return batch


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
    method = build.build_method(cfg, weight_files=False)
    step = build.build_train_step(cfg, method, info, "32")
    method.train()
    batch = random_batch(cfg, build.method_class(cfg).needs_target)
    first = peak_rise(step, batch, 0)  # also creates the optimiser's state and initialises the libraries
    return first, peak_rise(step, batch, 1)


def child(name: str) -> None:
    """Estimate, then measure, one configuration; prints its result as one JSON line."""
    cfg = traceable(aligning(compose_config(CONFIGS[name])))  # the same fused AdamW and correlation
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


def run_child(name: str, max_rss_gb: float) -> dict:
    """One child, killed when its resident set passes ``max_rss_gb``; paper-scale ones under the heavy-run
    lock (the synthetic ones stay far below 3 GiB)."""
    with open(LOCK, "w") as lock:
        if name not in SYNTHETIC:
            fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", name],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)},
        )
        while proc.poll() is None:
            try:
                if status_kib("VmRSS", str(proc.pid)) > max_rss_gb * 2**20:
                    proc.kill()
                    proc.wait()
                    return {"name": name, "error": f"killed above {max_rss_gb} GB resident"}
            except (FileNotFoundError, AttributeError):
                pass  # the child is exiting
            time.sleep(0.2)
        out = proc.stdout.read().strip().splitlines()
    if proc.returncode != 0 or not out:
        return {"name": name, "error": f"exit status {proc.returncode}"}
    return json.loads(out[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"of {', '.join(CONFIGS)} (default: the synthetic ones)"
    )
    p.add_argument("--max-rss-gb", type=float, default=20.0)
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
        r = run_child(name, args.max_rss_gb)
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
