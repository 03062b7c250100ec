"""PCK-1/3/5 and throughput (pairs/s) of the matcher on synthetic pairs with ground-truth flow, with the
``spatial_correlation_sampler`` extension and with the pure-PyTorch local correlation.

    python -m scripts.bench_alignment [--checkpoint last.pt] [--vgg-weights vgg16.pth] [--num-pairs 16]
"""

from __future__ import annotations

import argparse

import torch

from refign.alignment.correlation import extension_available
from refign.alignment.evaluate import evaluate, identity_baseline
from refign.alignment.network import build_alignment_network
from refign.data.datasets.synthetic import SyntheticDataset
from refign.data.transforms import JointTransform


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="matcher checkpoint (alignment_head.* keys)")
    p.add_argument("--vgg-weights", default=None, help="torchvision ImageNet VGG-16 weights")
    p.add_argument("--num-pairs", type=int, default=16)
    p.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    p.add_argument("--cache-dir", default="outputs/cache")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    data = SyntheticDataset(
        "test", "target", args.num_pairs, size=args.size,
        load_keys=("image", "image_ref", "flow", "flow_valid"),
        transform=JointTransform(), cache_dir=args.cache_dir,
    )  # fmt: skip
    rows = [("identity flow", identity_baseline(data), None)]
    for label, force_torch in (("with extension", False), ("pure PyTorch", True)):
        if not force_torch and not extension_available():
            rows.append((label, None, "not installed"))
            continue
        network = build_alignment_network(
            args.vgg_weights, args.checkpoint, force_torch_correlation=force_torch
        )
        evaluate(network.to(device), torch.utils.data.Subset(data, [0]), device, progress=False)  # warm-up
        rows.append((label, evaluate(network, data, device, progress=False), None))

    print(f"{args.num_pairs} synthetic pairs {args.size[0]}×{args.size[1]} on {device}")
    print(f"{'':16s} {'PCK-1':>7s} {'PCK-3':>7s} {'PCK-5':>7s} {'pairs/s':>8s}")
    for label, m, note in rows:
        if m is None:
            print(f"{label:16s} {note}")
        else:
            speed = f"{m['pairs_per_s']:8.2f}" if "pairs_per_s" in m else f"{'-':>8s}"
            print(f"{label:16s} {m['pck1']:7.2f} {m['pck3']:7.2f} {m['pck5']:7.2f} {speed}")


if __name__ == "__main__":
    main()
