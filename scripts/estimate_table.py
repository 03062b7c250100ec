"""The estimate of every official experiment at the paper's batch, in fp32 and bf16, as one Markdown table.

    python scripts/estimate_table.py [--out DIR] [EXPERIMENT …]

Runs ``python -m refign.estimate experiment=E trainer.precision=P`` for each experiment and precision (one
process each, one at a time) and prints a row per experiment: peak GiB fp32 / bf16, GFLOPs per step and
Refign's FLOP ratio (aligning step, and averaged over the steps that adapt on the references). Experiments
whose composed networks, crop and batch equal an earlier one's (Dark Zurich's and ACDC's) are not traced
again: their row names the experiment they equal. The rows are also merged into ``OUT/estimate_table.json``
(read by ``scripts/paper_scale_table.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("32", "bf16")
# the keys that decide a step's memory and FLOPs
SHAPE_KEYS = ("backbone", "head", "model", "uda", "mic", "refign", "refine", "alignment")
DATA_KEYS = ("crop_size", "batch_size")


def signature(experiment: str) -> str:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("estimate", overrides=[f"experiment={experiment}"])
    keys = {
        k: OmegaConf.to_container(cfg.get(k), resolve=False) if cfg.get(k) is not None else None
        for k in SHAPE_KEYS
    }
    keys.update({k: OmegaConf.to_container(cfg.dataset, resolve=True)[k] for k in DATA_KEYS})
    keys["pretrained"] = None  # weights are not read
    return json.dumps(keys, sort_keys=True, default=str)


def estimate(experiment: str, precision: str, out: Path) -> dict:
    run_dir = out / f"{experiment}_{precision}"
    result = run_dir / "estimate.json"
    if not result.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "refign.estimate",
                f"experiment={experiment}",
                f"trainer.precision={precision}",
                f"hydra.run.dir={run_dir}",
            ],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
    return json.loads(result.read_text())


def row(name: str, twin: str, results: dict[str, dict]) -> dict:
    """One experiment's figures at the paper's batch (``twin``: the experiment whose trace it shares)."""
    ratio = results["32"]["refign_flop_ratio"]
    return {
        "experiment": name,
        "traced_as": twin,
        "peak_gib": {prec: results[prec]["peak"] / 2**30 for prec in PRECISIONS},
        "gflops": results["32"]["flops"] / 1e9,
        "refign_flop_ratio": ratio,
        "refign_flop_ratio_mean": ratio and (ratio + 1) / 2,  # the official adapt_to_ref_p = 0.5
    }


def format_row(r: dict) -> str:
    ratio, mean = r["refign_flop_ratio"], r["refign_flop_ratio_mean"]
    cells = [
        r["experiment"] if r["traced_as"] == r["experiment"] else f"{r['experiment']} (= {r['traced_as']})",
        f"{r['peak_gib']['32']:.1f}",
        f"{r['peak_gib']['bf16']:.1f}",
        f"{r['gflops']:,.0f}",
        f"{ratio:.2f}× / {mean:.2f}×" if ratio else "– (no Refign)",
    ]
    return f"| {' | '.join(cells)} |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="*")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "estimate_table")
    args = p.parse_args()
    names = args.experiments or sorted(f.stem for f in (ROOT / "conf" / "experiment").glob("*.yaml"))
    print(
        "| experiment | peak GiB fp32 | peak GiB bf16 | GFLOPs/step | Refign FLOP ratio (aligning / mean) |"
    )
    print("|---|---|---|---|---|", flush=True)
    table = args.out / "estimate_table.json"
    rows = {r["experiment"]: r for r in (json.loads(table.read_text()) if table.is_file() else [])}
    seen: dict[str, str] = {}
    for name in names:
        twin = seen.setdefault(signature(name), name)
        rows[name] = row(name, twin, {prec: estimate(twin, prec, args.out) for prec in PRECISIONS})
        print(format_row(rows[name]), flush=True)
        table.write_text(json.dumps([rows[n] for n in sorted(rows)], indent=1))


if __name__ == "__main__":
    main()
