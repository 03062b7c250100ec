"""Evaluate a matcher on pairs with ground truth: dense flow (synthetic) or sparse points (csv sets)."""

from __future__ import annotations

import time

import torch
from torch.utils.data import Dataset

from refign.alignment.network import AlignmentNetwork
from refign.alignment.pck import SparseEPE
from refign.utils.progress import progress_bar


def pad_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad both (C, H, W) images at the bottom/right to their common size (official evaluation)."""
    h, w = max(a.shape[1], b.shape[1]), max(a.shape[2], b.shape[2])
    pad = lambda x: torch.nn.functional.pad(x, (0, w - x.shape[2], 0, h - x.shape[1]))
    return pad(a), pad(b)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = x.argsort().argsort().double(), y.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def certain_half_epe_ratio(certainty: torch.Tensor, epe: torch.Tensor) -> float:
    """Mean EPE of the 50 % most certain pixels divided by the mean EPE of all of them: 1 for a certainty
    that says nothing, near 0 when the confident pixels are the accurate ones (what Refign's P relies on)."""
    top = certainty.argsort(descending=True)[: max(1, len(certainty) // 2)]
    return float(epe[top].mean() / epe.mean().clamp_min(1e-12))


@torch.no_grad()
def evaluate(
    network: AlignmentNetwork, dataset: Dataset, device: torch.device, progress: bool = True
) -> dict:
    """PCK-1/3/5/10 and AEPE; with dense GT also, per condition, ``<condition>/pck5`` etc., and for the
    certainty the Spearman correlation with the EPE (should be negative: confident pixels have small errors)
    and ``certain50_epe_ratio`` (``certain_half_epe_ratio``); and the throughput in pairs/s."""
    network.eval()
    metric, per_condition = SparseEPE(), {}
    certs, epes, seconds = [], [], 0.0
    for i in progress_bar(range(len(dataset)), desc="eval", disable=not progress, leave=False):
        sample = dataset[i]
        trg, src = pad_pair(sample["image"], sample["image_ref"])
        start = time.perf_counter()
        flow, cert = network(trg[None].to(device), src[None].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        flow, cert = flow[0].cpu(), cert[0, 0].cpu()
        if "flow" in sample:
            valid = sample["flow_valid"]
            epes.append(metric.update_dense(flow, sample["flow"], valid))
            certs.append(cert[valid])
            if "condition" in sample:
                cond = per_condition.setdefault(sample["condition"], SparseEPE())
                cond.update_dense(flow, sample["flow"], valid)
        else:
            metric.update(flow, sample["corr_pts_ref"], sample["corr_pts"])
    out = metric.compute()
    out["pairs_per_s"] = len(dataset) / max(seconds, 1e-9)
    for name, cond in sorted(per_condition.items()):
        out |= {f"{name}/{k}": v for k, v in cond.compute().items()}
    if certs:
        cert_all, epe_all = torch.cat(certs), torch.cat(epes)
        out["spearman_cert_epe"] = spearman(cert_all, epe_all)
        out["certain50_epe_ratio"] = certain_half_epe_ratio(cert_all, epe_all)
    return out


def identity_baseline(dataset: Dataset) -> dict:
    """PCK of the zero flow on a dense-GT dataset: how far the pairs are from being aligned already."""
    metric = SparseEPE()
    for i in range(len(dataset)):
        sample = dataset[i]
        metric.update_dense(torch.zeros_like(sample["flow"]), sample["flow"], sample["flow_valid"])
    return metric.compute()


def pck_table(metrics: dict[str, float], data_name: str) -> str:
    """PCK / AEPE overall and per condition as a table, then the certainty and speed figures."""
    groups = [""] + sorted({k.split("/")[0] for k in metrics if "/" in k})
    cols = ("pck1", "pck3", "pck5", "pck10", "aepe")
    lines = [f"matcher on {data_name}: " + " | ".join(["split".ljust(8), *(c.upper() for c in cols)])]
    for g in groups:
        prefix = f"{g}/" if g else ""
        if f"{prefix}pck5" in metrics:
            cells = [f"{metrics[prefix + c]:6.2f}" for c in cols]
            lines.append(" " * (len(data_name) + 13) + " | ".join([(g or "all").ljust(8), *cells]))
    if "identity_pck5" in metrics:
        lines.append(
            f"identity (zero flow): PCK-5 {metrics['identity_pck5']:.2f}, AEPE {metrics['identity_aepe']:.2f}"
        )
    if "certain50_epe_ratio" in metrics:
        lines.append(
            f"certainty: EPE of the 50 % most certain pixels / EPE of all = {metrics['certain50_epe_ratio']:.3f} "
            f"(Spearman certainty–EPE {metrics['spearman_cert_epe']:+.3f})"
        )
    lines.append(f"throughput: {metrics['pairs_per_s']:.1f} pairs/s")
    return "\n".join(lines)
