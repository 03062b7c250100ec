"""The CUDA paths: a training step of every method (± Refign) in bf16 and fp16, the correlation extension
against the PyTorch loop, fp32 islands under CUDA autocast, sliding-window evaluation. Marked ``gpu``: skipped
where ``torch.cuda.is_available()`` is False (tests/conftest.py), run by ``make test`` on a GPU machine."""

from __future__ import annotations

import json

import pytest
import torch

from refign import build
from refign.alignment import correlation as corr_mod
from refign.alignment.correlation import GlobalCorrelation, LocalCorrelation, local_correlation
from refign.alignment.warp import warp
from refign.engine.checkpoint import load, method_state
from refign.engine.dist import DistInfo
from refign.engine.evaluator import evaluate
from refign.train import run
from tests.methods import MICRO

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda", 0)
METHODS = {
    "source_only": ["uda=source_only", "refign=off"],
    "dacs": ["uda=dacs", "refign=off"],
    "daformer": ["uda=daformer", "refign=off"],
    "hrda": ["uda=hrda", "refign=off", "model.attention_channels=16"],
    "dacs_refign": ["uda=dacs", "refign=on"],
    "daformer_refign": ["uda=daformer", "refign=on"],
    "hrda_refign": ["uda=hrda", "refign=on", "model.attention_channels=16"],
}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", list(METHODS))
def test_a_training_step_on_cuda(method, precision, tiny_cfg, tmp_path, matcher_file):
    """Two steps on the GPU with the real matcher (CPU-scale, random weights) where Refign is on: finite
    losses, fp32 master weights that stay finite, and every step counted."""
    cfg = tiny_cfg(
        *MICRO,
        *METHODS[method],
        f"alignment.checkpoint={matcher_file}",
        "refine.adapt_to_ref=false",
        "trainer.device=cuda",
        f"trainer.precision={precision}",
        "trainer.max_steps=2",
        n_train=8,
        n_val=2,
    )
    run(cfg, tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [x["train/loss"] for x in lines if "train/loss" in x]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    if method.endswith("refign"):
        assert all(0 < x["train/refign/trust_s"] <= 1 for x in lines if "train/loss" in x)
    state = load(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 2
    weights = [v for v in method_state(state).values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights)


@pytest.mark.skipif(not corr_mod.extension_available(), reason="spatial_correlation_sampler not installed")
def test_correlation_extension_matches_the_pytorch_loop_on_cuda():
    g = torch.Generator().manual_seed(0)
    trg, src = (torch.randn(2, 32, 24, 20, generator=g).to(CUDA).requires_grad_() for _ in range(2))
    weight = torch.randn(2, 81, 24, 20, generator=g).to(CUDA)
    results = []
    for force in (False, True):
        out = local_correlation(trg, src, 9, force_torch=force)
        (grad_trg, grad_src) = torch.autograd.grad((out * weight).sum(), (trg, src))
        results.append((out, grad_trg, grad_src))
    for ext, ref in zip(*results, strict=True):
        torch.testing.assert_close(ext, ref, rtol=1e-4, atol=1e-4)
    cpu = local_correlation(trg.detach().cpu(), src.detach().cpu(), 9, force_torch=True)
    torch.testing.assert_close(results[0][0].detach().cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_warp_and_correlation_are_fp32_under_cuda_autocast(dtype):
    g = torch.Generator().manual_seed(1)
    src, trg = (torch.randn(2, 16, 12, 10, generator=g).to(CUDA) for _ in range(2))
    logits = torch.randn(2, 19, 24, 32, generator=g).to(CUDA)
    flow = 3 * torch.randn(2, 2, 24, 32, generator=g).to(CUDA)
    modules = [GlobalCorrelation(), LocalCorrelation(9), LocalCorrelation(9, force_torch=True)]
    expected = [m(src, trg) for m in modules] + [warp(logits.to(dtype).float(), flow)]
    with torch.autocast("cuda", dtype=dtype):
        got = [m(src, trg) for m in modules] + [warp(logits.to(dtype), flow)]
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_sliding_window_evaluation_on_cuda_matches_cpu(tiny_cfg):
    """Three overlapping 32² windows (stride 16) per 32×64 image: the same logits and mIoU on both devices."""
    cfg = tiny_cfg(
        *MICRO, "model.inference=slide", "model.crop_size=[32,32]", "model.stride=[16,16]", n_val=2
    )
    torch.manual_seed(0)
    model = build.build_segmentor(cfg).eval()
    val = build.build_datasets(cfg, "val")["target"]
    image = val[0]["image"][None]
    with torch.no_grad():
        cpu_logits = model.predict(image, out_size=image.shape[-2:])
        cpu = evaluate(model, val, DistInfo(0, 1, 0, torch.device("cpu")), cfg.dataset.num_classes)
        model.to(CUDA)
        cuda_logits = model.predict(image.to(CUDA), out_size=image.shape[-2:])
        cuda = evaluate(model, val, DistInfo(0, 1, 0, CUDA), cfg.dataset.num_classes)
    torch.testing.assert_close(cuda_logits.cpu(), cpu_logits, rtol=1e-4, atol=1e-4)
    assert cuda["mIoU"] == pytest.approx(cpu["mIoU"], abs=0.05)
