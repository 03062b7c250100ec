"""Every official experiment at its true size, on this machine: time and memory per phase.

    python -m scripts.measure.dry_run EXPERIMENT… --data-root DIR --out DIR [--random-weights] [--batch-size N]
        [--steps 2] [--max-rss-gb 21] [--lock FILE] [-- OVERRIDE…]

For each ``conf/experiment/<EXPERIMENT>.yaml`` (``all``: every one), on a tree written by
``scripts/make_dataset_tree.py``, three phases through the real entry points, each a watched child process:
``train`` (``--steps`` steps, which save a checkpoint), ``evaluate`` (``split=test`` on it, the experiment's
own dataset only) and ``predict`` (the test-server archive). One Markdown row per experiment is printed and
merged into ``OUT/dry_run.md`` and ``OUT/dry_run.json`` (earlier rows of the same OUT are kept). Missing
pretrained files are an error naming them unless ``--random-weights``, which writes random weights into
``OUT/random_weights/`` and marks every printed line. See docs/performance.md#dry-run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from scripts.measure.common import (
    EXPERIMENTS,
    GIB,
    ROOT,
    compose_here,
    locked,
    run_watched,
    write_random_weights,
)


class DryRunError(ValueError):
    """Bad input: an unknown experiment, a missing weight file, a data root that is not there."""


# ---- one experiment ---------------------------------------------------------------------------------------
@dataclass
class Row:
    experiment: str
    batch: str
    random_weights: bool
    commit: str
    s_per_step: float | None = None
    cpu_s_per_step: float | None = None
    miou: float | None = None
    archive: str | None = None
    phases: dict[str, dict] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)  # what was asked after ``--``, shown with the batch


def weight_files(cfg: DictConfig) -> dict[str, str]:
    """The files the experiment reads its starting weights from, by configuration key."""
    files = {"backbone.pretrained": cfg.backbone.get("pretrained"), "init_weights": cfg.get("init_weights")}
    if cfg.get("refign", {}).get("enabled"):
        files["alignment.checkpoint"] = cfg.alignment.get("checkpoint")
        files["alignment.vgg_weights"] = cfg.alignment.get("vgg_weights")
    return {k: str(v) for k, v in files.items() if v}


def code_version() -> str:
    """The checkout's commit, ``+`` when it has uncommitted changes: each row says which code it measured."""
    git = ["git", "-C", str(ROOT), "describe", "--always", "--dirty=+", "--exclude=*"]  # no tag names
    try:
        return subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def step_seconds(metrics: Path) -> tuple[float | None, float | None]:
    """(wall, CPU) seconds per step between the logs of the first and the last step (one log per step): the
    steady step, without the start-up, the first data-loader start and the final checkpoint. CPU seconds are
    the training process's (all threads, data workers not included)."""
    if not metrics.is_file():
        return None, None
    logs = [json.loads(line) for line in metrics.read_text().splitlines() if '"train/loss"' in line]
    if len(logs) < 2:
        return None, None
    steps = len(logs) - 1
    cpu = (logs[-1]["cpu_time"] - logs[0]["cpu_time"]) / steps if "cpu_time" in logs[0] else None
    return (logs[-1]["time"] - logs[0]["time"]) / steps, cpu


class DryRun:
    def __init__(self, args: argparse.Namespace, extra: list[str]) -> None:
        self.args, self.extra = args, extra
        self.out = args.out.resolve()
        self.max_rss = args.max_rss_gb * GIB
        self.common = [
            f"paths.data_root={args.data_root.resolve()}",
            f"paths.output_dir={self.out / 'outputs'}",
        ]
        if args.random_weights:
            self.common.append(f"paths.pretrained_dir={self.out / 'random_weights'}")
        if args.batch_size:
            self.common.append(f"dataset.batch_size={args.batch_size}")

    def say(self, text: str) -> None:
        prefix = "[dry run, RANDOM WEIGHTS] " if self.args.random_weights else "[dry run] "
        print("\n".join(prefix + line for line in text.splitlines()), flush=True)

    def prepare(self, name: str) -> DictConfig:
        """The composed experiment, its weight files present (written at random with --random-weights)."""
        cfg = compose_here("train", [f"experiment={name}", *self.common, *self.extra])
        missing = {k: v for k, v in weight_files(cfg).items() if not Path(v).is_file()}
        if missing and not self.args.random_weights:
            listed = "; ".join(f"{k}={v}" for k, v in missing.items())
            raise DryRunError(
                f"{name}: pretrained file(s) not found: {listed} (download them, see docs/checkpoints.md, or "
                f"pass --random-weights to measure with random weights)"
            )
        for path in write_random_weights(cfg):
            self.say(f"{name}: wrote random weights {path}")
        return cfg

    def run(self, name: str, cfg: DictConfig) -> Row:
        paper = compose_here("train", [f"experiment={name}"]).dataset.batch_size
        ran = cfg.dataset.batch_size
        batch = f"{ran}" if ran == paper else f"{ran} (paper {paper})"
        row = Row(name, batch, self.args.random_weights, code_version(), overrides=list(self.extra))
        folder = self.out / name
        py = [sys.executable, "-m"]
        overrides = [f"experiment={name}", *self.common, *self.extra]
        train_dir = folder / "train"
        phases = {
            "train": [
                *py, "refign.train", *overrides, f"task_name=dry_run_{name}", f"hydra.run.dir={train_dir}",
                f"trainer.max_steps={self.args.steps}", "trainer.log_every=1", "trainer.eval_every=0",
                "trainer.checkpoint_every=0", "trainer.image_every=0", "~dataset.val",
            ],
        }  # fmt: skip
        ckpt = train_dir / "checkpoints" / "last.pt"
        dropped = [f"~dataset.test.{k}" for k in cfg.dataset.get("test", {}) if k != cfg.dataset.name]
        phases["evaluate"] = [
            *py, "refign.evaluate", *overrides, *dropped, f"checkpoint={ckpt}", "split=test",
            f"hydra.run.dir={folder / 'evaluate'}",
        ]  # fmt: skip
        phases["predict"] = [
            *py, "refign.predict", *overrides, f"checkpoint={ckpt}", f"out_dir={folder / 'predict'}",
            "overwrite=true", "overview_images=0", f"hydra.run.dir={folder / 'predict'}",
        ]  # fmt: skip
        for phase, cmd in phases.items():
            self.say(f"{name}: {phase} …")
            result = run_watched(cmd, folder / f"{phase}.log", self.max_rss, folder / f"{phase}_rss.csv")
            row.phases[phase] = asdict(result)
            self.say(
                f"{name}: {phase} {result.status}: {result.wall_s:.0f} s wall, {result.cpu_s:.0f} CPU s, "
                f"peak {result.peak_gib:.1f} GiB"
            )
            if result.status != "ok":
                self.say(f"{name}: see {result.log}")
                break
        row.s_per_step, row.cpu_s_per_step = step_seconds(train_dir / "metrics.jsonl")
        eval_json = folder / "evaluate" / "eval.json"
        if eval_json.is_file():
            row.miou = json.loads(eval_json.read_text())[cfg.dataset.name]["mIoU"]
        archives = sorted((folder / "predict").glob("*_submission.zip"))
        if archives:
            row.archive = f"{archives[0].name} ({archives[0].stat().st_size / 2**20:.1f} MiB)"
        return row


# ---- the table --------------------------------------------------------------------------------------------
HEADER = (
    "| experiment | batch | weights | status | s/step | CPU s/step | train CPU s | train peak GiB | eval CPU s | eval peak GiB "
    "| val mIoU | predict CPU s | predict peak GiB | archive | commit |"
)


def format_row(row: dict) -> str:
    ph = row["phases"]

    def num(value: float | None, fmt: str = ".0f") -> str:
        return "–" if value is None else format(value, fmt)

    def peak(phase: str) -> str:
        """The phase's process, and in brackets the phase with its data workers where they add 0.1 GiB."""
        if phase not in ph:
            return "–"
        own = ph[phase]["peak_gib"]
        group = ph[phase].get("group_peak_gib", own)  # rows measured before the group peak existed
        return f"{own:.1f}" + (f" ({group:.1f})" if group > own + 0.1 else "")

    status = next((f"{p}: {v['status']}" for p, v in ph.items() if v["status"] != "ok"), "ok")
    fields = [
        row["experiment"],
        " ".join([row["batch"], *row.get("overrides", [])]),  # e.g. 1 (paper 2) debug=tiny_model
        "random" if row["random_weights"] else "released",
        status,
        num(row["s_per_step"]),
        num(row.get("cpu_s_per_step")),
        num(ph.get("train", {}).get("cpu_s")),
        peak("train"),
        num(ph.get("evaluate", {}).get("cpu_s")),
        peak("evaluate"),
        num(row["miou"], ".2f"),
        num(ph.get("predict", {}).get("cpu_s")),
        peak("predict"),
        row["archive"] or "–",
        row["commit"],
    ]
    return "| " + " | ".join(fields) + " |"


def format_table(rows: list[dict]) -> str:
    return "\n".join([HEADER, "|" + "---|" * HEADER.count(" | ") + "---|", *map(format_row, rows)])


def load_rows(out: Path) -> dict[str, dict]:
    """The rows of ``OUT/dry_run.json`` by experiment (none before the first run into ``out``)."""
    path = out / "dry_run.json"
    return {r["experiment"]: r for r in json.loads(path.read_text())} if path.is_file() else {}


def save_rows(out: Path, rows: list[Row]) -> list[dict]:
    """Merge ``rows`` into ``OUT/dry_run.json`` (by experiment, in the order of conf/experiment/) and rewrite
    ``OUT/dry_run.md``; returns every row."""
    merged = load_rows(out) | {r.experiment: asdict(r) for r in rows}
    ordered = [merged[name] for name in sorted(merged, key=lambda n: (n not in EXPERIMENTS, n))]
    (out / "dry_run.json").write_text(json.dumps(ordered, indent=1))
    (out / "dry_run.md").write_text(format_table(ordered) + "\n")
    return ordered


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="+", metavar="EXPERIMENT", help="conf/experiment/ names, or all")
    p.add_argument("--data-root", type=Path, required=True, help="a tree from scripts/make_dataset_tree.py")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--random-weights", action="store_true", help="random weights for missing weight files")
    p.add_argument("--batch-size", type=int, default=None, help="images per domain (default: the paper's)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--max-rss-gb", type=float, default=21.0, help="the watchdog's limit per phase (GiB)")
    p.add_argument("--lock", type=Path, default=None, help="flock this file around each experiment")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    return p.parse_args(argv[:split]), argv[split + 1 :]


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    names = EXPERIMENTS if args.experiments == ["all"] else args.experiments
    try:
        unknown = [n for n in names if n not in EXPERIMENTS]
        if unknown:
            raise DryRunError(f"unknown experiment(s) {unknown}: conf/experiment/ has {EXPERIMENTS}")
        if not args.data_root.is_dir():
            raise DryRunError(
                f"--data-root {args.data_root} is not a folder (write one: scripts/make_dataset_tree.py)"
            )
        if args.steps < 2:
            raise DryRunError("--steps must be ≥ 2 (the step time is the time between two steps' logs)")
        dry = DryRun(args, extra)
        configs = {name: dry.prepare(name) for name in names}  # every input checked before the first run
    except DryRunError as err:
        print(f"dry_run: error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, cfg in configs.items():
        with locked(args.lock):
            rows.append(dry.run(name, cfg))
        save_rows(dry.out, rows)
        dry.say(format_row(asdict(rows[-1])))
    table = format_table(save_rows(dry.out, rows))
    dry.say(f"table of every experiment run into {dry.out}:\n{table}")
    return 0 if all(p["status"] == "ok" for r in rows for p in asdict(r)["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
