"""scripts/gpu_check.sh: the report's fields, from a run of its CPU-checkable parts (``--cpu-dry``: every
step at the CPU-sized scale, the GPU tests skipped). Slow: it runs four benchmark rows and a dry run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "gpu_check.sh"


@pytest.mark.slow
def test_the_cpu_dry_report_has_every_field(tmp_path):
    report = tmp_path / "report.md"
    subprocess.run(["bash", str(SCRIPT), "--cpu-dry", "--report", str(report)], check=True, timeout=900)
    text = report.read_text()
    fields = dict(re.findall(r"^([a-z_ ]+[a-z]): (.*)$", text, re.M))
    assert fields["mode"] == "cpu-dry" and fields["device"] == "none"
    assert re.match(r"\d+ skipped", fields["pytest_gpu"]) and "failed" not in fields["pytest_gpu"]
    bench = [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| 32 | ")]
    assert bench == ["daformer", "daformer_refign", "hrda", "hrda_refign"]
    assert fields["estimate"].startswith("unavailable") or "estimate acdc_refign_hrda_star" in fields
    (row,) = [line for line in text.splitlines() if line.startswith("| acdc_refign_hrda_star |")]
    cells = row.split(" | ")
    assert (
        cells[2:4] == ["random", "ok"] and 0 <= float(cells[9]) <= 100 and "acdc_submission.zip" in cells[12]
    )
    assert fields["train_cuda_peak_gib"] == "none (CPU run)" and int(fields["total_seconds"]) > 0
