"""The memory and FLOP estimate (``python -m refign.estimate``): its counting against allocations worked out
by hand, the CUDA autocast policy on a CPU trace, and its figure against memory measured in a real step."""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from refign.estimate.autocast import CudaAutocastPolicy
from refign.estimate.flops import StepFlops
from refign.estimate.memory import LiveMemory
from refign.estimate.trace import HostFactories
from refign.models.backbones import mit
from tests.test_official_numerics import MIT_B0

ROOT = Path(__file__).resolve().parents[1]


def test_live_memory_counts_storages_once_and_frees_them():
    """Views share their storage; a freed intermediate leaves the count but stays in the peak."""
    with FakeTensorMode():
        memory = LiveMemory()
        with memory:
            a = torch.empty(1000)  # 4000 bytes
            view = a[:10].view(2, 5)  # no new storage
            b = a * 2  # 4000
            del b
            c = torch.empty(250, dtype=torch.float64)  # 2000
        assert view.shape == (2, 5)
        assert memory.current == 4000 + 2000
        assert memory.peak == 8000  # a and b together, before b was freed
        assert memory.breakdown() == {"activations": 8000}
        del a, view, c
        assert memory.current == 0


def test_live_memory_labels_gradients_and_keeps_the_peak_composition():
    with FakeTensorMode():
        weight = torch.nn.Parameter(torch.empty(64, 32))  # 8192 bytes
        memory = LiveMemory()
        memory.track([weight], "parameters")
        with memory:
            x = torch.empty(16, 64)  # 4096
            y = x @ weight  # 16 × 32 × 4 = 2048, freed after the sum
            loss = y.sum()  # 4
            del y
            memory.phase = "backward"
            loss.backward()
            memory.assign([weight.grad], "gradients")
    # the backward's peak: weight, x, loss, the gradient of y (2048, an expanded scalar: 4) and weight.grad
    parts = memory.breakdown()
    assert parts["parameters"] == 8192 and parts["gradients"] == 8192
    assert memory.peak == sum(parts.values())


@pytest.mark.parametrize(
    "fn,dtype",
    [
        (lambda x: F.softmax(x, -1), torch.float32),  # CUDA: fp32 list
        (lambda x: x.log_softmax(1), torch.float32),
        (lambda x: F.layer_norm(x, x.shape[-1:]), torch.float32),
        (lambda x: F.pad(x, (1, 1, 1, 1), mode="reflect"), torch.bfloat16),  # CPU would run it in fp32
        (lambda x: F.relu(x), torch.bfloat16),  # untouched
    ],
)
def test_cpu_trace_follows_cuda_autocast(fn, dtype):
    with FakeTensorMode():
        x = torch.empty(2, 3, 8, 8, dtype=torch.bfloat16)
        with CudaAutocastPolicy(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert fn(x).dtype == dtype
            assert torch.mm(torch.empty(4, 4), torch.empty(4, 4)).dtype == torch.bfloat16


def test_estimate_is_within_20_percent_of_a_measured_step():
    """Synthetic DAFormer + Refign: the estimate of what a steady step adds to the networks, batch and
    optimiser state, against the rise of the resident set of the same real CPU step in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-m", "scripts.measure.validate_estimate", "synthetic_daformer_refign"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    row = out.stdout.strip().splitlines()[-1].split("|")
    assert row[1].strip() == "synthetic_daformer_refign", out.stdout
    estimated, measured = float(row[2]), float(row[3])
    assert measured > 0.05  # GiB: the step's activations, not noise
    assert 0.8 <= estimated / measured <= 1.2, out.stdout


def tiny_mit(checkpoint_activations: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return mit(**MIT_B0, drop_path_rate=0.1, checkpoint_activations=checkpoint_activations).train()


def test_checkpointing_the_backbone_changes_no_number():
    """Same seed, same input: bit-identical features and gradients (DropPath draws the same masks in the
    recomputation), with or without ``backbone.checkpoint_activations``; the checkpointed model is a deep
    copy, as the EMA teacher is made, and nothing warns (torch's non-reentrant checkpoint, not mmseg's
    reentrant ``with_cp``)."""
    x = torch.randn(2, 3, 64, 64)
    results = []
    for flag in (False, True):
        model = copy.deepcopy(tiny_mit(flag))
        torch.manual_seed(1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            feats = model(x)
            sum(f.square().mean() for f in feats).backward()
        results.append(([f.detach() for f in feats], [p.grad for p in model.parameters()]))
    (f0, g0), (f1, g1) = results
    assert all(torch.equal(a, b) for a, b in zip(f0, f1, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(g0, g1, strict=True))


def test_a_checkpointed_block_is_recomputed_under_the_forward_s_autocast_policy():
    """The trace's CUDA autocast policy (a torch function mode, inactive in the backward) applies to the
    recomputation too: the gradients equal those without checkpointing (without the policy there, the
    recomputed norms would be bf16 where the forward's were fp32, and the checkpoint stops)."""
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for flag in (False, True):
        model = tiny_mit(flag)
        torch.manual_seed(1)
        with CudaAutocastPolicy(), torch.autocast("cpu", dtype=torch.bfloat16):
            feats = model(x)
            assert feats[0].dtype == torch.float32  # the policy ran the stage's LayerNorm in fp32
        sum(f.float().square().mean() for f in feats).backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_checkpointing_the_backbone_lowers_the_estimated_activations():
    """The step's rise over the parameters and the input (counted before it, as the estimate counts them:
    the checkpoint's saved inputs are aliases of them, which would otherwise be counted as new), with the
    estimate's FLOP counter on (``FlopCounterMode``'s module hooks kept the recomputed tensors alive)."""
    peaks = []
    for flag in (False, True):
        with FakeTensorMode(allow_non_fake_inputs=True), HostFactories():
            model = tiny_mit(flag)
            x = torch.empty(2, 3, 128, 128)
            memory = LiveMemory()
            memory.track([*model.parameters(), x], "before")
            before = memory.current
            with memory, StepFlops():
                sum(f.sum() for f in model(x)).backward()
        peaks.append(memory.peak - before)
    assert peaks[1] < 0.8 * peaks[0], peaks
