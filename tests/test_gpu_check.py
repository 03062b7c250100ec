"""scripts/gpu/gpu_check.sh: the report's fields, from a run of its CPU-checkable parts (``--cpu-dry``: every
step at the CPU-sized scale, the GPU tests skipped; slow: it runs four benchmark rows and a dry run), and
what its wheelhouse carries and installs (scripts/gpu/wheelhouse.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

GPU = Path(__file__).parents[1] / "scripts" / "gpu"
SCRIPT = GPU / "gpu_check.sh"


def wheelhouse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GPU / "wheelhouse.py"), *args], capture_output=True, text=True)


def requirements(*args: str) -> list[str]:
    run = wheelhouse(*args)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def test_the_wheelhouse_leaves_out_what_the_gpu_image_has():
    every = requirements("carried", "--all")
    carried = requirements("carried")
    names = {line.split("==")[0] for line in carried}
    assert {"hydra-core", "albumentations", "mmengine"} <= names
    assert not names & {"scipy", "opencv-python-headless", "h5py", "pytest"}
    assert set(carried) < set(every) and all("==" in line for line in every)


def test_the_install_takes_only_what_the_interpreter_lacks(tmp_path):
    listed = tmp_path / "requirements.txt"
    listed.write_text("# a comment\nPyYAML==0.1\nrefign-no-such-package==1.0  # not installed\n")
    assert requirements("missing", "--requirements", str(listed)) == ["refign-no-such-package==1.0"]


def test_a_missing_requirements_file_is_named(tmp_path):
    run = wheelhouse("missing", "--requirements", str(tmp_path / "none.txt"))
    assert run.returncode == 2 and "none.txt" in run.stderr


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
    for experiment in ("acdc_refign_daformer", "acdc_refign_hrda_star"):
        assert re.match(r"peak \d+\.\d\d GiB bf16 \(rc 0, ", fields[f"estimate {experiment}"])
    (header,) = [line for line in text.splitlines() if line.startswith("| experiment |")]
    (row,) = [line for line in text.splitlines() if line.startswith("| acdc_refign_hrda_star |")]
    cells = dict(zip(header.strip(" |").split(" | "), row.strip(" |").split(" | "), strict=True))
    assert cells["weights"] == "random" and cells["status"] == "ok"
    assert 0 <= float(cells["val mIoU"]) <= 100 and cells["archive"].startswith("acdc_submission.zip")
    assert fields["train_cuda_peak_gib"] == "none (CPU run)" and int(fields["total_seconds"]) > 0
