"""The README's paper-scale table: each official experiment's dry run beside its estimate.

    python -m scripts.measure.paper_table [EXPERIMENT …] [--dry-run outputs/dry_run] [--estimates DIR]
    python -m scripts.measure.paper_table --estimate-only     # docs/estimate.md's table: fp32 / bf16 estimates

Runs ``python -m refign.estimate`` for each experiment in fp32 and bf16, one process at a time, unless
``ESTIMATES/<E>_<P>/estimate.json`` holds it; an experiment whose networks, crop and batch equal an earlier
one's shares its trace. Joins them with ``DRY_RUN/dry_run.json`` (``scripts/measure/dry_run.py``) by
experiment, "–" where either is missing; measured and estimated figures stay in their own columns.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from refign.task import compose
from scripts.measure.common import EXPERIMENTS, GIB, ROOT
from scripts.measure.dry_run import load_rows

PRECISIONS = ("32", "bf16")
# the keys that decide a step's memory and FLOPs
SHAPE_KEYS = ("backbone", "head", "model", "uda", "mic", "refign", "refine", "alignment")
DATA_KEYS = ("crop_size", "batch_size")
HEADER = (
    "| experiment | CPU batch | CPU s/step | CPU peak GiB train / eval | est. GPU peak GiB fp32 / bf16 "
    "| GFLOPs/step | Refign FLOP ratio (aligning / mean) |"
)
ESTIMATE_HEADER = (
    "| experiment | peak GiB fp32 | peak GiB bf16 | GFLOPs/step | Refign FLOP ratio (aligning / mean) |"
)


# ---- the estimates -----------------------------------------------------------------------------------------
def signature(experiment: str) -> str:
    """What decides an experiment's estimate: equal signatures, equal figures."""
    cfg = compose("estimate", [f"experiment={experiment}"])
    keys = {
        k: OmegaConf.to_container(cfg.get(k), resolve=False) if cfg.get(k) is not None else None
        for k in SHAPE_KEYS
    }
    keys.update({k: OmegaConf.to_container(cfg.dataset, resolve=True)[k] for k in DATA_KEYS})
    return json.dumps(keys, sort_keys=True, default=str)


def estimate(experiment: str, precision: str, out: Path) -> dict:
    """``refign.estimate``'s ``estimate.json`` for one experiment and precision (run unless ``out`` has it)."""
    run_dir = out / f"{experiment}_{precision}"
    result = run_dir / "estimate.json"
    if not result.exists():
        cmd = [sys.executable, "-m", "refign.estimate", f"experiment={experiment}"]
        cmd += [f"trainer.precision={precision}", f"hydra.run.dir={run_dir}"]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def estimate_row(name: str, twin: str, results: dict[str, dict]) -> dict:
    """One experiment's figures at the paper's batch (``twin``: the experiment whose trace it shares)."""
    ratio = results["32"]["refign_flop_ratio"]
    return {
        "experiment": name,
        "traced_as": twin,
        "peak_gib": {prec: results[prec]["peak"] / GIB for prec in PRECISIONS},
        "gflops": results["32"]["flops"] / 1e9,
        "refign_flop_ratio": ratio,
        "refign_flop_ratio_mean": ratio and (ratio + 1) / 2,  # the official adapt_to_ref_p = 0.5
    }


def estimate_rows(experiments: list[str], out: Path) -> dict[str, dict]:
    seen: dict[str, str] = {}
    rows = {}
    for name in experiments:
        twin = seen.setdefault(signature(name), name)
        rows[name] = estimate_row(name, twin, {prec: estimate(twin, prec, out) for prec in PRECISIONS})
    return rows


def ratio_cell(row: dict) -> str:
    ratio = row["refign_flop_ratio"]
    return f"{ratio:.2f}× / {row['refign_flop_ratio_mean']:.2f}×" if ratio else "– (no Refign)"


def estimate_only_row(row: dict) -> str:
    """docs/estimate.md's row: the experiment (and the trace it shares), peaks, GFLOPs, Refign's ratio."""
    name = row["experiment"]
    shared = name if row["traced_as"] == name else f"{name} (= {row['traced_as']})"
    peaks = [f"{row['peak_gib'][prec]:.1f}" for prec in PRECISIONS]
    return f"| {' | '.join([shared, *peaks, *estimated_cells(row)[1:]])} |"


# ---- the joined table --------------------------------------------------------------------------------------
def measured_cells(row: dict | None) -> list[str]:
    """batch, s/step (CPU seconds of the training process; a phase that failed is named there), peaks."""
    if row is None:
        return ["–"] * 3
    phases = row["phases"]
    failed = [f"{p}: {v['status']}" for p, v in phases.items() if v["status"] != "ok"]
    cpu = row.get("cpu_s_per_step")

    def peak(phase: str) -> str:
        return f"{phases[phase]['peak_gib']:.1f}" if phase in phases else "–"

    return [
        " ".join([row["batch"], *row.get("overrides", [])]),  # the settings that made it fit, if any
        " ".join([f"{cpu:.0f}" if cpu is not None else "–", *(f"({f})" for f in failed)]),
        f"{peak('train')} / {peak('evaluate')}",
    ]


def estimated_cells(row: dict | None) -> list[str]:
    if row is None:
        return ["–"] * 3
    return [
        f"{row['peak_gib']['32']:.1f} / {row['peak_gib']['bf16']:.1f}",
        f"{row['gflops']:,.0f}",
        ratio_cell(row),
    ]


def table(dry_run: dict[str, dict], estimates: dict[str, dict], experiments: list[str]) -> str:
    lines = [HEADER, "|" + " --- |" * (HEADER.count(" | ") + 1)]
    for name in experiments:
        cells = [name, *measured_cells(dry_run.get(name)), *estimated_cells(estimates.get(name))]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "experiments", nargs="*", metavar="EXPERIMENT", help="names under conf/experiment/ (default: all)"
    )
    p.add_argument("--dry-run", type=Path, default=ROOT / "outputs" / "dry_run", help="dry_run.py's --out")
    p.add_argument(
        "--estimates", type=Path, default=ROOT / "outputs" / "estimate_table", help="the estimates' runs"
    )
    p.add_argument("--estimate-only", action="store_true", help="the estimates only, fp32 and bf16 apart")
    args = p.parse_args(argv)
    unknown = sorted(set(args.experiments) - set(EXPERIMENTS))
    if unknown:
        p.error(f"unknown experiment(s) {unknown}: conf/experiment/ has {EXPERIMENTS}")
    experiments = args.experiments or EXPERIMENTS
    estimates = estimate_rows(experiments, args.estimates)
    if args.estimate_only:
        rule = "|" + "---|" * (ESTIMATE_HEADER.count(" | ") + 1)
        print("\n".join([ESTIMATE_HEADER, rule, *(estimate_only_row(estimates[n]) for n in experiments)]))
    else:
        print(table(load_rows(args.dry_run), estimates, experiments))


if __name__ == "__main__":
    main()
