"""Sparse flow metrics as the official ``SparseEPE`` computes them (docs/uawarpc.md#pck).

Estimated flow is read at the nearest pixel (``torch.round``, half-to-even); PCK-k counts EPE ≤ k
(inclusive) and averages over *all correspondences of the dataset*; AEPE averages per-pair means.
"""

from __future__ import annotations

import torch

THRESHOLDS = (1, 3, 5, 10)


class SparseEPE:
    """Accumulates over pairs; ``compute()`` → {'pck1', 'pck3', 'pck5', 'pck10', 'aepe'} (PCK in %)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hits = {t: 0 for t in THRESHOLDS}
        self.n_points, self.n_pairs, self.sum_pair_epe = 0, 0, 0.0

    def update(self, flow: torch.Tensor, pts_src: torch.Tensor, pts_trg: torch.Tensor) -> torch.Tensor:
        """One pair: ``flow`` (2, H, W) target→source; points (N, 2) as (x, y). Returns the kept EPEs."""
        _, h, w = flow.shape
        rs, rt = torch.round(pts_src), torch.round(pts_trg)
        keep = (
            (rs[:, 0] >= 0) & (rs[:, 0] < w) & (rs[:, 1] >= 0) & (rs[:, 1] < h)
            & (rt[:, 0] >= 0) & (rt[:, 0] < w) & (rt[:, 1] >= 0) & (rt[:, 1] < h)
        )  # fmt: skip
        pts_src, pts_trg, rt = pts_src[keep], pts_trg[keep], rt[keep].long()
        gt = pts_src - pts_trg
        est = flow[:, rt[:, 1], rt[:, 0]].T
        epe = torch.linalg.norm(est.float() - gt.float(), dim=1)
        if len(epe):
            for t in THRESHOLDS:
                self.hits[t] += int((epe <= t).sum())
            self.n_points += len(epe)
            self.n_pairs += 1
            self.sum_pair_epe += float(epe.mean())
        return epe

    def update_dense(self, flow: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """One pair with a dense ground truth (synthetic data): every valid pixel is a correspondence."""
        ys, xs = torch.nonzero(valid, as_tuple=True)
        pts_trg = torch.stack([xs, ys], 1).float()
        return self.update(flow, pts_trg + flow_gt[:, ys, xs].T, pts_trg)

    def compute(self) -> dict[str, float]:
        if self.n_points == 0:
            raise ValueError("SparseEPE: no valid correspondence was accumulated")
        out = {f"pck{t}": 100.0 * self.hits[t] / self.n_points for t in THRESHOLDS}
        out["aepe"] = self.sum_pair_epe / self.n_pairs
        return out
