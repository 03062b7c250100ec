"""Running the matcher on pairs of pictures (``refign.align``): a user's two images or two folders, or a
dataset's pairs; each pair's warped reference, certainty, flow and, where the ground-truth flow is known, its
end-point error, drawn and saved, with PCK / average end-point error per pair and overall."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from refign.alignment.pck import SparseEPE
from refign.alignment.warp import warp
from refign.drawing.flow import certainty_overlay, colour_wheel, epe_to_rgb, flow_to_rgb, gray, panel
from refign.inference.media import IMAGE_SUFFIXES, read_picture, save_png
from refign.inference.segment import model_input
from refign.utils.imaging import to_rgb_uint8
from refign.utils.progress import progress_bar

Pair = dict  # image, image_ref (normalised (3, H, W)) and optionally flow (2, H, W), flow_valid (H, W)


def file_pairs(target: str, reference: str, size: list[int] | None) -> Iterator[tuple[str, Pair]]:
    """``(name, pair)`` of two images, or of two folders' images with the same relative path; the reference
    is brought to the target's size (or both to ``size``): the matcher compares pictures of one size."""
    t, r = Path(target).expanduser(), Path(reference).expanduser()
    for path in (t, r):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
    if t.is_dir() != r.is_dir():
        raise ValueError(f"target={t} and reference={r}: give two images or two folders")
    if t.is_dir():
        names = sorted(p.relative_to(t) for p in t.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        missing = [str(n) for n in names if not (r / n).is_file()]
        if missing or not names:
            raise FileNotFoundError(f"{r}: no reference for {missing[:5]}" if missing else f"{t}: no images")
        pairs = [(str(n.with_suffix("")), t / n, r / n) for n in names]
    else:
        pairs = [(t.stem, t, r)]
    for name, tp, rp in pairs:
        trg = read_picture(tp)
        shape = tuple(size) if size else trg.shape[:2]
        yield name, {"image": model_input(trg, shape), "image_ref": model_input(read_picture(rp), shape)}


@torch.no_grad()
def align(matcher: torch.nn.Module, pair: Pair, device: torch.device) -> dict[str, np.ndarray]:
    """Flow target → reference, certainty, the warped reference (white outside the reference) and validity."""
    trg, ref = pair["image"][None].to(device), pair["image_ref"][None].to(device)
    gt = ("flow", "flow_valid") if getattr(matcher, "needs_gt_flow", False) else ()
    if gt and "flow" not in pair:
        raise ValueError("alignment=oracle needs ground-truth flow: use the synthetic benchmark's pairs")
    flow, certainty = matcher(trg, ref, *(pair[key][None].to(device) for key in gt))
    warped, valid = warp(ref, flow, return_mask=True)
    rgb = to_rgb_uint8(warped[0])
    valid = valid[0].cpu().numpy()
    rgb[~valid] = 255
    return {
        "flow": flow[0].float().cpu().numpy(),
        "certainty": certainty[0, 0].float().cpu().numpy(),
        "warped": rgb,
        "valid": valid,
    }


def pictures(pair: Pair, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pictures of one pair (with ground-truth flow, its end-point error too), and all side by side."""
    target, reference = to_rgb_uint8(pair["image"]), to_rgb_uint8(pair["image_ref"])
    flow_rgb = flow_to_rgb(out["flow"])
    wheel = colour_wheel(min(64, flow_rgb.shape[0] // 3))
    flow_rgb[: wheel.shape[0], : wheel.shape[1]] = wheel  # the key, top left
    pics = {
        "warped": out["warped"],
        "certainty": gray(out["certainty"]),
        "overlay": certainty_overlay(target, out["warped"], out["certainty"], out["valid"]),
        "flow": flow_rgb,
    }
    if "flow" in pair:
        epe = np.linalg.norm(out["flow"] - pair["flow"].float().numpy(), axis=0)
        pics["epe"] = epe_to_rgb(epe, pair["flow_valid"].numpy().astype(bool))
    pics["panel"] = panel([target, reference, *pics.values()])
    return pics


def rounded(metric: SparseEPE) -> dict[str, float]:
    return {k: round(v, 2) for k, v in metric.compute().items()}


def align_pairs(matcher, pairs, out_dir: Path, device: torch.device) -> dict:
    """Align, draw and save every pair; per-pair certainty (and PCK/EPE where the flow is known) and, over all
    pairs with ground truth, the overall PCK/EPE."""
    results, overall = {}, SparseEPE()
    for name, pair in progress_bar(pairs, desc="align", unit="pair"):
        out = align(matcher, pair, device)
        for kind, image in pictures(pair, out).items():
            save_png(out_dir / f"{name}_{kind}.png", image)
        results[name] = {"certainty_mean": round(float(out["certainty"].mean()), 4)}
        if "flow" in pair:
            flows = (torch.from_numpy(out["flow"]), pair["flow"].float(), pair["flow_valid"].bool())
            metric = SparseEPE()
            metric.update_dense(*flows)
            overall.update_dense(*flows)
            results[name] |= rounded(metric)
    summary: dict = {"pairs": results}
    if overall.n_points:
        summary["overall"] = rounded(overall)
    return summary
