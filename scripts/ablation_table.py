"""The paper's ablation table from one Hydra sweep: mean ± std of validation mIoU per ``+ablation=rowK``.

    python -m refign.train -m refign=on +ablation=row1,row2,row3,row4,row5,row6 seed=0,1,2 task_name=ablation
    python -m scripts.ablation_table outputs/ablation/multirun/<date>      # one or more sweep folders
    python -m scripts.ablation_table outputs/ablation/multirun/<date> --wandb   # also as a wandb table run

Runs are recognised by their own ``.hydra/overrides.yaml``, so several sweeps (e.g. seeds run on different
days) combine; a run without an evaluation file yet is reported as unfinished and left out. Minutes per run:
from its config dump to its last evaluation file. ``--wandb`` logs the table (offline) in the wandb group of
the sweep's runs, beside them on the dashboard.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from refign.engine.wandb_run import RUN_FILE
from scripts import benchmark

# What each row adds, in the paper's order (README "Ablation")
ROWS = {
    "row1": "1 un-aligned reference, ε = 0.5",
    "row2": "2 + alignment",
    "row3": "3 + matching certainty P",
    "row4": "4 + static-class mask M",
    "row5": "5 + adaptive trust s",
    "row6": "6 + adapting on references (full)",
}


def run_overrides(run_dir: Path) -> dict[str, str]:
    """``key=value`` command-line overrides of one run, keyed without the ``+``/``++`` prefix."""
    lines = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    pairs = (line.split("=", 1) for line in lines if "=" in line)
    return {key.lstrip("+"): value for key, value in pairs}


def collect(sweeps: list[Path]) -> tuple[dict[str, list[dict]], dict[str, list[float]]]:
    results: dict[str, list[dict]] = {}
    times: dict[str, list[float]] = {}
    for config in sorted(p for sweep in sweeps for p in sweep.rglob(".hydra/config.yaml")):
        run_dir = config.parent.parent
        row = run_overrides(run_dir).get("ablation")
        if row not in ROWS:
            continue
        evals = sorted(run_dir.glob("eval_*.json"))
        if not evals:
            print(f"unfinished (no evaluation yet): {run_dir}", file=sys.stderr)
            continue
        name = ROWS[row]
        results.setdefault(name, []).append(benchmark.last_eval(run_dir))
        times.setdefault(name, []).append(evals[-1].stat().st_mtime - config.stat().st_mtime)
    if not results:
        raise SystemExit(
            f"no finished run with an +ablation=rowK override under {', '.join(map(str, sweeps))}"
        )
    order = list(ROWS.values())
    return dict(sorted(results.items(), key=lambda kv: order.index(kv[0]))), times


def wandb_group(sweeps: list[Path]) -> str | None:
    """The wandb group the sweeps' runs were logged in, when they share one (None: no wandb runs, or several
    groups)."""
    groups = {json.loads(f.read_text()).get("group") for sweep in sweeps for f in sweep.rglob(RUN_FILE)}
    return groups.pop() if len(groups) == 1 else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep folders (searched recursively for runs)")
    p.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    p.add_argument("--wandb", action="store_true", help="also log the table as a wandb run (offline)")
    args = p.parse_args(argv)
    results, times = collect(args.sweeps)
    seeds = {name: len(runs) for name, runs in results.items()}
    text = benchmark.table(results, times)
    print(
        f"Validation mIoU (%), mean ± std over runs (runs per row: {sorted(set(seeds.values()))}):\n\n{text}"
    )
    if args.out is not None:
        args.out.write_text(text + "\n")
    if args.wandb:
        folder = args.out.parent if args.out is not None else args.sweeps[0]
        benchmark.log_wandb_table("ablation", results, times, folder, wandb_group(args.sweeps))


if __name__ == "__main__":
    main()
