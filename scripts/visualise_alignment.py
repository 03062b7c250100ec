"""PNG panel of one synthetic pair: target, reference, reference warped onto the target, certainty.

python scripts/visualise_alignment.py --checkpoint last.pt --index 0 --out alignment.png
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from refign.alignment.network import build_alignment_network
from refign.alignment.warp import warp
from refign.data.datasets.synthetic import SyntheticDataset
from refign.data.transforms import JointTransform
from refign.imaging import to_rgb_uint8


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--vgg-weights", default=None)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--cache-dir", default="outputs/cache")
    parser.add_argument("--out", default="alignment.png")
    args = parser.parse_args()

    data = SyntheticDataset(
        "test", "target", args.index + 1, size=args.size,
        load_keys=("image", "image_ref"), transform=JointTransform(), cache_dir=args.cache_dir,
    )  # fmt: skip
    sample = data[args.index]
    network = build_alignment_network(args.vgg_weights, args.checkpoint).eval()
    with torch.no_grad():
        flow, cert = network(sample["image"][None], sample["image_ref"][None])
        warped, valid = warp(sample["image_ref"][None], flow, return_mask=True)
    warped = warped[0] * valid[0]
    cert_rgb = np.repeat((cert[0, 0].numpy() * 255).astype(np.uint8)[..., None], 3, axis=2)
    panel = np.concatenate(
        [to_rgb_uint8(sample["image"]), to_rgb_uint8(sample["image_ref"]), to_rgb_uint8(warped), cert_rgb], 1
    )
    Image.fromarray(panel).save(args.out)
    print(f"wrote {args.out}: target | reference | warped reference | certainty")


if __name__ == "__main__":
    main()
