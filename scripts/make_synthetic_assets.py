"""Reproduce the two small files shipped for the embedded synthetic benchmark (``refign/assets/``).

    python -m scripts.make_synthetic_assets segmentor   # source-only segmentor, the UDA rows' pretrained start
    python -m scripts.make_synthetic_assets matcher     # the CPU-scale UAWarpC matcher (alignment=uawarpc_small)
    python -m scripts.make_synthetic_assets all

Each trains with the project's own entry point in a separate process, keeps only the network weights, scores
the file as the test suite does (``refign/assets/scores.py``) and records command, SHA-256 and scores in
``refign/assets/manifest.json``. Extra Hydra overrides go after ``--``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from refign.assets.scores import (
    ASSETS,
    MANIFEST,
    MATCHER_FILE,
    SEGMENTOR_FILE,
    matcher_scores,
    segmentor_scores,
)
from refign.models.weights import read_state_dict, segmentor_state

ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(cmd: list[str]) -> float:
    print("[assets] " + " ".join(cmd), flush=True)
    start = time.time()
    subprocess.run([sys.executable, *cmd], cwd=ROOT, check=True)
    return time.time() - start


def record(name: str, path: Path, command: list[str], seconds: float, scores: dict) -> None:
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    manifest[name] = {
        "file": path.name,
        "sha256": sha256(path),
        "bytes": path.stat().st_size,
        "command": "python " + " ".join(command),
        "train_minutes": round(seconds / 60, 1),
        "scores": {k: round(v, 3) for k, v in scores.items()},
    }
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"[assets] {path} ({path.stat().st_size / 2**20:.1f} MiB): {manifest[name]['scores']}")


# asset → (entry point, overrides, file, how to read the bare weights from a checkpoint, how to score them);
# the manifest records the whole command
SEGMENTOR_RUN = ["uda=source_only", "refign=off", "init_weights=null", "seed=0", "trainer.max_steps=3000"]
RECIPES = {
    "segmentor": (
        "refign.train",
        [*SEGMENTOR_RUN, "task_name=assets_segmentor"],
        SEGMENTOR_FILE,
        segmentor_state,
        segmentor_scores,
    ),
    "matcher": (
        "refign.align_train",
        ["pairs=synthetic", "alignment.checkpoint=null", "seed=0"],
        MATCHER_FILE,
        read_state_dict,
        matcher_scores,
    ),
}


def produce(name: str, extra: list[str]) -> None:
    """Train asset ``name``, keep the bare weights of its last checkpoint as ``refign/assets/<file>`` (fresh
    tensors, so the file holds no storage shared with the rest of the checkpoint) and record it."""
    entry, overrides, file, read, score = RECIPES[name]
    run_dir = Path("outputs") / "assets" / name
    cmd = ["-m", entry, *overrides, f"hydra.run.dir={run_dir}", *extra]
    seconds = run(cmd)
    state = {k: v.clone() for k, v in read(ROOT / run_dir / "checkpoints" / "last.pt").items()}
    path = ASSETS / file
    torch.save(state, path)
    record(name, path, cmd, seconds, score(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=[*RECIPES, "all"])
    args, extra = p.parse_known_args()
    extra = [e for e in extra if e != "--"]
    for name in RECIPES if args.what == "all" else [args.what]:
        produce(name, extra)


if __name__ == "__main__":
    main()
