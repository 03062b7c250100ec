"""Training-step time of a self-training method with and without Refign, measured in one process.

    python scripts/bench_refign_overhead.py [--steps 20] [--checkpoint uawarpc.ckpt] [-- hydra overrides]

Both variants train the same configuration (default: DAFormer on the synthetic benchmark) on the same batches;
Refign runs with ``adapt_to_ref`` off, so every step aligns and refines (with the official 50 % adapt-to-
reference steps the expected overhead is about half). Without ``--checkpoint`` the matcher has random weights:
the time is the same, the pseudo-labels are not meaningful.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from refign import build
from refign.alignment.network import build_alignment_network
from refign.data.loader import merge_domains, step_loader
from refign.engine.dist import setup
from refign.engine.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def step_times(cfg, steps: int, warmup: int) -> list[float]:
    info = setup("cpu")
    torch.manual_seed(0)
    method = build.build_method(cfg).train()
    source, target = build.build_train_sets(cfg)
    optimizer = build_optimizer(method, **cfg.optim)
    src = step_loader(source, cfg.dataset.batch_size, info, 0, 0, 0)
    trg = step_loader(target, cfg.dataset.batch_size, info, 1, 0, 0)
    times = []
    for step in range(warmup + steps):
        batch = merge_domains(next(src), next(trg), info.device)
        start = time.perf_counter()
        out = method(batch, step)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--checkpoint", default=None, help="matcher checkpoint; default: random weights")
    args, overrides = p.parse_known_args()
    overrides = [o for o in overrides if o != "--"] or ["uda=daformer"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = str(Path(tmp) / "random_uawarpc.ckpt")
            torch.save({"state_dict": build_alignment_network().state_dict()}, ckpt)
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            plain = compose("train", overrides=overrides)
            refign = compose(
                "train",
                overrides=[
                    *overrides,
                    "refign=on",
                    f"alignment.checkpoint={ckpt}",
                    "refine.adapt_to_ref=false",
                ],
            )
        results = {}
        for name, cfg in (("without Refign", plain), ("with Refign", refign)):
            results[name] = statistics.median(step_times(cfg, args.steps, args.warmup))
            print(f"{name:>15}: {results[name] * 1000:.0f} ms/step (median of {args.steps})", flush=True)
    ratio = results["with Refign"] / results["without Refign"]
    print(
        f"Refign step-time ratio: {ratio:.2f}× ({' '.join(overrides)}, crops {plain.dataset.crop_size}, "
        f"{torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
