"""Evaluate a matcher on pairs with ground truth: dense flow (synthetic) or sparse points (csv sets)."""

from __future__ import annotations

import time

import torch
from torch.utils.data import Dataset

from refign.alignment.network import AlignmentNetwork
from refign.alignment.pck import SparseEPE
from refign.progress import progress_bar


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
