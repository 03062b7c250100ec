"""A checkpoint write that runs out of space, on a real file system that is full (a small tmpfs): the run
stops with a line that says "no space", what was needed and where; the previous checkpoint is intact and
loads, and no temporary file is left behind."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from refign.engine import checkpoint
from refign.models.weights import CheckpointError
from refign.train import run
from tests.methods import METHODS, MICRO


@contextlib.contextmanager
def tmpfs(folder: Path, size: int) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes at ``folder`` (root only: skips the test elsewhere)."""
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_stops_the_run_naming_the_space_and_keeps_the_previous_checkpoint(tiny_cfg, tmp_path):
    overrides = [*METHODS["source_only"], *MICRO, "trainer.checkpoint_every=2", "trainer.max_steps=4"]
    sized = tmp_path / "sized"
    run(tiny_cfg(*overrides, "trainer.max_steps=2", n_train=4, n_val=2), sized)
    one = (sized / "checkpoints" / "step_0000002.pt").stat().st_size
    with tmpfs(tmp_path / "small", size=(one * 3 // 2 // 4096 + 1) * 4096) as disk:  # room for one checkpoint
        with pytest.raises(CheckpointError) as failed:
            run(tiny_cfg(*overrides, n_train=4, n_val=2), disk / "run")
        message = str(failed.value)
        assert "no space left on device" in message and str(disk / "run" / "checkpoints") in message
        assert f"it needs {one / 2**20:.1f} MiB ({one} bytes)" in message  # a checkpoint of the same shapes
        folder = disk / "run" / "checkpoints"
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
        kept = checkpoint.load(folder / checkpoint.LAST)  # verified against its checksum
        assert kept["step"] == 2
