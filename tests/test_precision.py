"""Mixed precision by default at the paper's scale (issue 21, point 5): every experiment asks for ``auto16``,
which the engine resolves per device; the synthetic CPU scale stays fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from refign.engine.step import resolve_precision
from refign.task import compose
from tests.conftest import CONF_DIR

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


def test_every_experiment_asks_for_16_bit_mixed_precision_and_the_synthetic_scale_for_fp32():
    asked = {
        name: compose("train", overrides=[f"experiment={name}"]).trainer.precision for name in EXPERIMENTS
    }
    synthetic = compose("train").trainer.precision
    assert len(asked) == 12 and set(asked.values()) == {"auto16"}
    assert synthetic == "32"


@pytest.mark.parametrize(
    "device,bf16_supported,expected",
    [("cuda", True, "bf16"), ("cuda", False, "fp16"), ("cpu", True, "32"), ("cpu", False, "32")],
)
def test_auto16_is_bf16_where_the_gpu_has_it_fp16_where_not_and_fp32_on_the_cpu(
    monkeypatch, device, bf16_supported, expected
):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert resolve_precision("auto16", torch.device(device)) == expected


@pytest.mark.parametrize("asked", ["32", "bf16", "fp16"])
def test_a_precision_asked_by_name_is_kept_on_every_device(asked):
    assert resolve_precision(asked, torch.device("cpu")) == asked
