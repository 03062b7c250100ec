"""What the measurement tools share (scripts/README.md): a configuration of this checkout, random weight files
where it expects the released ones, a seeded method and a random batch at its size, the rise of a step's peak
resident set, and a child process measured under a lock and a memory watchdog.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict

from refign import build
from refign.engine.dist import DistInfo
from refign.engine.reproducibility import seed_everything
from refign.engine.step import TrainStep
from refign.task import compose

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
GIB = 2**30
PAGE = os.sysconf("SC_PAGE_SIZE")
CPU = DistInfo(0, 1, 0, torch.device("cpu"))


def compose_here(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """``compose`` with ``paths.root_dir`` at this checkout: its outputs and weight folders whatever the
    working directory."""
    return compose(config_name, [f"paths.root_dir={ROOT}", *overrides])


def write_random_weights(cfg: DictConfig) -> list[Path]:
    """Random-weight files at every weight path of ``cfg`` that does not exist yet (backbone ``pretrained``,
    ``init_weights``, Refign's ``alignment.checkpoint``), in the formats their loaders accept; returns the
    files written. For measuring time and memory at true size without the released weights (bench_step,
    dry_run): a step's cost does not depend on the weights. Existing files are never touched."""
    written = []

    def missing(path) -> bool:
        return bool(path) and not Path(path).exists()

    def save(state: dict, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        written.append(Path(path))

    if missing(cfg.backbone.get("pretrained")):
        save(build.instantiate(cfg.backbone, pretrained=None).state_dict(), cfg.backbone.pretrained)
    if missing(cfg.get("init_weights")):
        fresh = cfg.copy()
        with open_dict(fresh):
            fresh.init_weights = None
            fresh.backbone.pretrained = None
        save(build.build_segmentor(fresh).state_dict(), cfg.init_weights)
    if cfg.get("refign", {}).get("enabled") and missing(cfg.alignment.get("checkpoint")):
        matcher = build.instantiate(cfg.alignment, checkpoint=None)
        save({"state_dict": matcher.state_dict()}, cfg.alignment.checkpoint)
    return written


def random_batch(
    cfg: DictConfig, generator: torch.Generator, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """Images at the configured batch and crop size and labels made of 32×32-pixel blocks of random classes
    (regions that ClassMix and the feature-distance mask select like real ones), for the domains the method
    reads: the source, the target (``needs_target``) and Refign's reference image."""
    b, (h, w) = cfg.dataset.batch_size, cfg.dataset.crop_size
    coarse = torch.randint(0, cfg.dataset.num_classes, (b, 1, -(-h // 32), -(-w // 32)), generator=generator)
    keys = ["image_src"]
    if build.method_class(cfg).needs_target:
        keys += ["image_trg", *(["image_ref"] if "image_ref" in build.target_load_keys(cfg) else [])]
    batch = {k: torch.randn(b, 3, h, w, generator=generator) for k in keys}
    labels = F.interpolate(coarse.float(), scale_factor=32, mode="nearest")
    batch["semantic_src"] = labels[:, 0, :h, :w].long()
    return {k: v.to(device or "cpu") for k, v in batch.items()}


def seeded_method(cfg: DictConfig) -> torch.nn.Module:
    """The configured method in training mode, built after seeding every generator with ``cfg.seed``, so that
    each tool steps the same weights on every run."""
    seed_everything(cfg.seed)
    return build.build_method(cfg).train()


def status_kib(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def peak_rise(step: TrainStep, batch: dict[str, torch.Tensor], index: int) -> int:
    """Bytes the peak resident set rises by during one real step, over the resident set before it (freed
    memory returned to the system first, so that it does not hide the step's own allocations)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak resident set starts again from now
    step(batch, index)
    return (status_kib("VmHWM") - before) * 1024


@contextmanager
def locked(path: Path | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (None: none), for a machine shared with other heavy jobs."""
    if path is None:
        yield
        return
    with Path(path).open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield


# ---- a child process, measured and watched ---------------------------------------------------------------
@dataclass
class Phase:
    """What one child process cost; ``status`` is ``ok``, ``failed (rc N)`` or ``killed (RSS > … GiB)``."""

    status: str
    wall_s: float
    cpu_s: float
    peak_gib: float  # the child's own process: ru_maxrss
    group_peak_gib: float  # the child with its data workers: total PSS, sampled every 0.5 s
    log: str


def group_memory(pgid: int) -> tuple[int, int]:
    """(largest resident set, total proportional set size) in bytes over the process group ``pgid`` (a child
    and its data workers). PSS splits shared pages between the processes that map them, so the total is the
    physical memory the group holds — what runs a machine out of memory, e.g. pages copied on write between
    a trainer and workers forked from it."""
    largest = total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # fields after "(comm)": state, ppid, pgrp, …
                continue
            with open(f"/proc/{entry.name}/smaps_rollup") as f:
                pss = sum(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
        except (OSError, ValueError):  # gone meanwhile
            continue
        largest, total = max(largest, int(fields[21]) * PAGE), total + pss
    return largest, total


# A child's ru_maxrss counts the memory of the process it was forked from until its exec: the child is forked
# from this small launcher (not from the tool, which holds torch), which reports its rusage.
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def run_watched(
    cmd: list[str],
    log_path: Path,
    max_rss: float,
    trace_path: Path | None = None,
    env: dict[str, str] | None = None,
) -> Phase:
    """Run ``cmd`` in its own process group with its output in ``log_path``; kill the group as soon as its
    processes together hold more than ``max_rss`` bytes (total PSS). ``trace_path`` gets
    ``seconds,largest_rss_gib,group_pss_gib`` samples (every 0.5 s)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    usage_path = log_path.with_suffix(".rusage.json")
    usage_path.unlink(missing_ok=True)
    killed: float | None = None  # the group's total PSS (GiB) when the watchdog killed it
    group_peak, rc = 0, None
    start = time.perf_counter()
    with log_path.open("w") as log, open(trace_path or os.devnull, "w") as trace:
        launcher = [sys.executable, "-S", "-c", LAUNCHER, str(usage_path), *cmd]
        proc = subprocess.Popen(
            launcher, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True
        )
        while rc is None:  # a sample of the group's memory every 0.5 s until the child ends
            try:
                rc = proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                largest, total = group_memory(proc.pid)
                group_peak = max(group_peak, total)
                if total:
                    trace.write(f"{time.perf_counter() - start:.1f},{largest / GIB:.3f},{total / GIB:.3f}\n")
                if total > max_rss and killed is None:
                    killed = total / GIB
                    os.killpg(proc.pid, signal.SIGKILL)
    wall = time.perf_counter() - start
    usage = json.loads(usage_path.read_text()) if usage_path.is_file() else {"cpu_s": 0.0, "maxrss_kib": 0}
    verdict = "ok" if rc == 0 else f"failed (rc {rc})"
    if killed is not None:
        verdict = f"killed (RSS {killed:.1f} > {max_rss / GIB:.0f} GiB)"
    peak = usage["maxrss_kib"] * 1024 / GIB
    return Phase(verdict, wall, usage["cpu_s"], peak, group_peak / GIB, str(log_path))


class ChildError(RuntimeError):
    """A child that failed, was killed or printed no result; ``status`` as ``Phase.status``."""

    def __init__(self, status: str, log: str) -> None:
        super().__init__(f"{status}:\n{log[-3000:]}")
        self.status = status


def run_json_child(module: str, args: list[str], max_rss_gb: float, mmap_threshold: int) -> dict:
    """``python -m <module> --child <args>``, killed above ``max_rss_gb`` (``run_watched``), with glibc's mmap
    threshold fixed at ``mmap_threshold`` bytes (a freed block leaves the resident set the same way on every
    run); returns the JSON object on the last line of its output that holds one (its warnings do not)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "child.log"
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(mmap_threshold)}
        phase = run_watched([sys.executable, "-m", module, "--child", *args], log, max_rss_gb * GIB, env=env)
        text = log.read_text()
    results = [line for line in text.splitlines() if line.startswith("{")]
    if phase.status != "ok" or not results:
        raise ChildError(phase.status if phase.status != "ok" else "printed no result", text)
    return json.loads(results[-1])
