"""Train several configurations over several seeds and print a mean ± std table of validation mIoU.

    python -m scripts.benchmark --row source-only uda=source_only --row daformer uda=daformer --seeds 0 1 2

Each row is a name followed by Hydra overrides; ``--common`` overrides apply to every row. Every run is a
``python -m refign.train`` process writing to ``<out>/<row>/seed<k>``; a run whose ``eval_*.json`` exists is
not repeated, so an interrupted benchmark continues. ``--jobs N`` runs N processes at once, each with
``cores / N`` threads (then times per run are per-process times under that load). The table is printed and
written to ``<out>/table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--row",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "OVERRIDE"),
        help="a row: its name, then Hydra overrides",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--common", nargs="*", default=[], help="overrides applied to every row")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmark")
    p.add_argument("--jobs", type=int, default=1, help="training processes at once")
    p.add_argument("--wandb", action="store_true", help="also log the table as a wandb run (offline)")
    return p.parse_args(argv)


def last_eval(run_dir: Path) -> dict | None:
    evals = sorted(run_dir.glob("eval_*.json"))
    return json.loads(evals[-1].read_text()) if evals else None


def train(
    name: str, overrides: list[str], seed: int, out: Path, threads: int | None = None
) -> tuple[dict, float]:
    """One run (or its stored result): the last evaluation and the run's wall time in seconds."""
    run_dir = out / name / f"seed{seed}"
    done, timing = last_eval(run_dir), run_dir / "bench_time.json"
    if done is not None:
        return done, json.loads(timing.read_text())["seconds"] if timing.exists() else float("nan")
    cmd = [sys.executable, "-m", "refign.train", f"seed={seed}", f"task_name=bench_{name}"]
    cmd += [f"hydra.run.dir={run_dir}", *overrides]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    print(f"[benchmark] {name} seed {seed}: {' '.join(cmd[2:])}", flush=True)
    start = time.time()
    with open(out / f"{name}.seed{seed}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.time() - start
    timing.write_text(json.dumps({"seconds": seconds, "threads": threads}))
    print(f"[benchmark] {name} seed {seed}: done in {seconds / 60:.1f} min", flush=True)
    return last_eval(run_dir), seconds


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def table_cells(
    results: dict[str, list[dict]], times: dict[str, list[float]]
) -> tuple[list[str], list[list]]:
    """The table's column names and rows of cells (strings, as printed): the Markdown table and the wandb
    table (``--wandb``) show the same cells."""
    conditions = sorted(
        {c for runs in results.values() for r in runs for c in r.get("target", {}).get("per_condition", {})}
    )
    head = ["method", "source-val", "target-val", *conditions, "min/run"]
    rows = []
    for name, runs in results.items():
        cells = [
            name,
            mean_std([r["source"]["mIoU"] for r in runs if "source" in r]),
            mean_std([r["target"]["mIoU"] for r in runs]),
        ]
        cells += [mean_std([r["target"]["per_condition"][c] for r in runs]) for c in conditions]
        known = [t for t in times[name] if t == t]  # NaN: a run finished before times were recorded
        cells.append(f"{statistics.mean(known) / 60:.1f}" if known else "–")
        rows.append(cells)
    return head, rows


def table(results: dict[str, list[dict]], times: dict[str, list[float]]) -> str:
    """The Markdown table of ``table_cells``."""
    head, rows = table_cells(results, times)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def log_wandb_table(
    key: str,
    results: dict[str, list[dict]],
    times: dict[str, list[float]],
    out_dir: Path,
    group: str | None = None,
) -> None:
    """``--wandb``: the table as a wandb run of its own (offline; ``wandb sync`` uploads it)."""
    from refign.engine.wandb_run import log_table

    folder = log_table(key, *table_cells(results, times), out_dir, ROOT, group)
    print(f"wandb table run: {folder}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    runs = [(name, [*args.common, *overrides], seed) for name, *overrides in args.row for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda r: train(*r, args.out, threads), runs))
    results: dict[str, list[dict]] = {}
    times: dict[str, list[float]] = {}
    for (name, _, _), (result, seconds) in zip(runs, done, strict=True):
        results.setdefault(name, []).append(result)
        times.setdefault(name, []).append(seconds)
    text = table(results, times)
    print(f"\nValidation mIoU (%), mean ± std over seeds {args.seeds}:\n\n{text}")
    (args.out / "table.md").write_text(text + "\n")
    if args.wandb:
        log_wandb_table(args.out.name, results, times, args.out)


if __name__ == "__main__":
    main()
