"""The README's paper-scale table: each official experiment's dry run beside its estimate.

    python scripts/paper_scale_table.py [--dry-run outputs/dry_run] [--estimates outputs/estimate_table]

Joins ``DRY_RUN/dry_run.json`` (``scripts/dry_run.py``: 2 steps at true size on the CPU, the evaluation, the
archive) with ``ESTIMATES/estimate_table.json`` (``scripts/estimate_table.py``: the fake-tensor estimate at
the paper's batch) by experiment and prints one Markdown row per experiment of conf/experiment/, with "–"
where one of the two has not been run. Measured and estimated figures stay in their own, labelled columns.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = (
    "| experiment | CPU batch | 2 steps | CPU s/step | CPU peak GiB train / eval | val mIoU | archive "
    "| est. GPU peak GiB fp32 / bf16 | GFLOPs/step | Refign FLOP ratio (aligning / mean) |"
)


def load(path: Path) -> dict[str, dict]:
    return {r["experiment"]: r for r in json.loads(path.read_text())} if path.is_file() else {}


def measured_cells(row: dict | None) -> list[str]:
    """batch, status, s/step (CPU seconds of the training process), peaks, mIoU, archive."""
    if row is None:
        return ["–"] * 6
    phases = row["phases"]
    status = next((f"{p}: {v['status']}" for p, v in phases.items() if v["status"] != "ok"), "ok")

    def peak(phase: str) -> str:
        return f"{phases[phase]['peak_gib']:.1f}" if phase in phases else "–"

    cpu = row.get("cpu_s_per_step")
    return [
        " ".join([row["batch"], *row.get("overrides", [])]),  # the settings that made it fit, if any
        status,
        f"{cpu:.0f}" if cpu is not None else "–",
        f"{peak('train')} / {peak('evaluate')}",
        f"{row['miou']:.2f}" if row["miou"] is not None else "–",
        "written" if row["archive"] else "–",
    ]


def estimated_cells(row: dict | None) -> list[str]:
    if row is None:
        return ["–"] * 3
    ratio = row["refign_flop_ratio"]
    return [
        f"{row['peak_gib']['32']:.1f} / {row['peak_gib']['bf16']:.1f}",
        f"{row['gflops']:,.0f}",
        f"{ratio:.2f}× / {row['refign_flop_ratio_mean']:.2f}×" if ratio else "– (no Refign)",
    ]


def table(dry_run: dict[str, dict], estimates: dict[str, dict], experiments: list[str]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count(" | ") + 1)]
    for name in experiments:
        cells = [name, *measured_cells(dry_run.get(name)), *estimated_cells(estimates.get(name))]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", type=Path, default=ROOT / "outputs" / "dry_run")
    p.add_argument("--estimates", type=Path, default=ROOT / "outputs" / "estimate_table")
    args = p.parse_args(argv)
    experiments = sorted(f.stem for f in (ROOT / "conf" / "experiment").glob("*.yaml"))
    dry_run = load(args.dry_run / "dry_run.json")
    estimates = load(args.estimates / "estimate_table.json")
    print(table(dry_run, estimates, experiments))


if __name__ == "__main__":
    main()
