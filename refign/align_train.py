"""python -m refign.align_train stage=1|2 [mode=eval] — trains or evaluates the UAWarpC matcher (docs/uawarpc.md#training)."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader
from tqdm import tqdm

from refign.alignment.evaluate import evaluate, identity_baseline
from refign.alignment.losses import balance_weights, bipath_loss, warp_supervision_loss
from refign.alignment.network import AlignmentNetwork
from refign.alignment.pairs import WarpConsistencyPairs
from refign.alignment.synthetic_warps import WarpConfig
from refign.engine.checkpoint import save_atomic

log = logging.getLogger("refign.align_train")


def pick_device(name: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def split_pyramids(network: AlignmentNetwork, images: list[torch.Tensor]) -> list:
    """Frozen features of several equally sized batches in one backbone call, split back per batch."""
    b = images[0].shape[0]
    full, small = network.pyramids(torch.cat(images))
    return [
        ([f[i * b : (i + 1) * b] for f in full], [f[i * b : (i + 1) * b] for f in small])
        for i in range(len(images))
    ]


def stage_cfg(cfg: DictConfig) -> DictConfig:
    """The settings of the selected training stage (``stage=N`` → ``stages.stageN``)."""
    key = f"stage{cfg.stage}"
    if key not in cfg.stages:
        raise ValueError(f"stage={cfg.stage!r}: no '{key}' in stages (have {list(cfg.stages)})")
    return cfg.stages[key]


def training_step(network: AlignmentNetwork, batch: dict, cfg: DictConfig) -> dict[str, torch.Tensor]:
    """Three head passes (I′→I, I′→J, J→I) and the weighted warp-supervision + bipath losses."""
    img_i, img_j, prime = batch["image"], batch["image_ref"], batch["image_prime"]
    flow, mask = batch["flow_prime"], batch["mask_prime"]
    size = tuple(img_i.shape[-2:])
    pyr_i, pyr_j, pyr_p = split_pyramids(network, [img_i, img_j, prime])
    prime_i = network.head_levels(pyr_p, pyr_i, size)
    prime_j = network.head_levels(pyr_p, pyr_j, size)
    j_i = network.head_levels(pyr_j, pyr_i, size)
    loss_ss = warp_supervision_loss(prime_i, flow, mask)
    loss_us = bipath_loss(prime_j, j_i, flow, mask, visibility_mask=stage_cfg(cfg).visibility_mask)
    w_ss, w_us = balance_weights(loss_ss, loss_us, cfg.loss_weighting)
    return {"loss": w_ss * loss_ss + w_us * loss_us, "loss_ss": loss_ss.detach(), "loss_us": loss_us.detach()}


def train(cfg: DictConfig, network: AlignmentNetwork, device: torch.device, run_dir: Path) -> Path:
    stage = stage_cfg(cfg)
    max_steps = cfg.trainer.max_steps or stage.max_steps
    pairs = WarpConsistencyPairs(
        instantiate(cfg.data.train),
        WarpConfig(**OmegaConf.to_container(stage.warps)),
        swap_p=cfg.swap_p,
        crop_size=cfg.data.crop_size,
        min_valid_fraction=cfg.min_valid_fraction,
    )
    loader = DataLoader(
        pairs, cfg.trainer.batch_size, shuffle=True, drop_last=True, num_workers=cfg.trainer.num_workers
    )
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=stage.lr, weight_decay=stage.weight_decay)
    milestones = [int(f * max_steps) for f in stage.milestones]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=stage.gamma)
    amp = bool(cfg.trainer.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=amp)
    ckpt = run_dir / "checkpoints" / "last.pt"
    network.train()
    step, bar = 0, tqdm(total=max_steps, desc=f"align stage {cfg.stage}")
    while step < max_steps:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out = training_step(network, batch, cfg)
            if not torch.isfinite(out["loss"]):
                raise FloatingPointError(f"non-finite alignment loss at step {step}: {out}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            bar.update()
            if step % cfg.trainer.log_every == 0:
                bar.set_postfix({k: f"{v.item():.3f}" for k, v in out.items()})
            if step % cfg.trainer.checkpoint_every == 0 or step == max_steps:
                state = {"state_dict": network.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "step": step, "stage": cfg.stage}  # fmt: skip
                save_atomic(state, ckpt)
            if step >= max_steps:
                break
    bar.close()
    return ckpt


def run(cfg: DictConfig, run_dir: Path) -> dict:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    if cfg.mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {cfg.mode!r}")
    if cfg.mode == "eval" and not cfg.alignment.checkpoint:
        shipped = cfg.data.get("shipped_checkpoint")
        if not shipped:
            raise ValueError(
                f"mode=eval needs alignment.checkpoint=<file> (data {cfg.data.name!r} ships none)"
            )
        log.info("mode=eval without alignment.checkpoint: evaluating the shipped matcher %s", shipped)
        with open_dict(cfg):
            cfg.alignment.checkpoint = shipped
    network = instantiate(cfg.alignment).to(device)
    result: dict = {}
    if cfg.mode == "train":
        result["checkpoint"] = str(train(cfg, network, device, run_dir))
    eval_set = instantiate(cfg.data.eval)
    metrics = evaluate(network, eval_set, device)
    if cfg.data.name == "synthetic":
        metrics |= {f"identity_{k}": v for k, v in identity_baseline(eval_set).items()}
    print(format_metrics(metrics, cfg.data.name))
    return result | metrics


def format_metrics(metrics: dict[str, float], data_name: str) -> str:
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="align_train")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
