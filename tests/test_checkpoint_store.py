"""The checkpoint store on small fake states: rotation and best, checksums, damaged files, a full disk."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from refign.engine import checkpoint, checkpoint_store, resume
from refign.engine.checkpoint_store import CheckpointStore, verify
from refign.models.weights import CheckpointError


def fake_state(step: int) -> dict:
    """A checkpoint-like state whose tensors differ per step."""
    generator = torch.Generator().manual_seed(step)
    return {"segmentor": {"w": torch.randn(64, 64, generator=generator)}, "step": step}


def resume_auto(task_root: Path, folder: Path) -> Path | None:
    """What ``resume=auto`` picks under ``task_root`` for the configuration of the run in ``folder``."""
    CheckpointStore(folder).write_config({"seed": 0})
    return resume.find_same_run(task_root, {"seed": 0})


def assert_holds(path: Path, step: int) -> None:
    """``path`` loads (as users load ``last.pt``) into the state saved at ``step``."""
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == step
    assert torch.equal(loaded["segmentor"]["w"], fake_state(step)["segmentor"]["w"])


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def steps_file(step: int) -> str:
    return f"step_{step:07d}.pt"


def saved(folder: Path, steps: range, keep_last: int = 2) -> CheckpointStore:
    store = CheckpointStore(folder, keep_last=keep_last)
    for step in steps:
        store.save(fake_state(step), step)
    return store


@pytest.mark.parametrize("keep_last", [1, 2, 3])
def test_keeps_the_newest_k_and_the_best_across_resumes(tmp_path, keep_last):
    metrics = {1: 0.1, 2: 0.5, 3: 0.3, 4: 0.2, 5: 0.4}
    store = CheckpointStore(tmp_path, keep_last=keep_last)
    for step, metric in metrics.items():
        store.save(fake_state(step), step, metric=metric)
    kept = {*range(6 - keep_last, 6), 2}
    assert names(tmp_path) == {
        "last.pt",
        "best.pt",
        "best.json",
        *(steps_file(s) for s in kept),
        *(f"{steps_file(s)}.sha256" for s in kept),
    }
    assert os.readlink(tmp_path / "last.pt") == steps_file(5)
    assert_holds(tmp_path / "last.pt", 5)
    assert checkpoint.load(tmp_path / "last.pt")["step"] == 5  # what evaluate, predict and resume read
    assert_holds(tmp_path / "best.pt", 2)

    resumed = CheckpointStore(tmp_path, keep_last=keep_last)  # the best's metric outlives the process
    resumed.save(fake_state(6), 6, metric=0.45)
    assert_holds(tmp_path / "best.pt", 2)
    resumed.save(fake_state(7), 7, metric=0.6)
    assert_holds(tmp_path / "best.pt", 7)
    assert steps_file(2) not in names(tmp_path)  # no longer the best, and older than the newest k


def test_keep_last_below_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"trainer\.keep_checkpoints.*got 0"):
        CheckpointStore(tmp_path, keep_last=0)


def test_checksum_sidecar_is_the_sha256sum_line_of_the_bytes(tmp_path):
    path = CheckpointStore(tmp_path).save(fake_state(10), 10)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "step_0000010.pt.sha256").read_text() == f"{expected}  step_0000010.pt\n"
    if shutil.which("sha256sum"):
        check = subprocess.run(
            ["sha256sum", "-c", "step_0000010.pt.sha256"], cwd=tmp_path, capture_output=True, text=True
        )
        assert check.returncode == 0 and check.stdout == "step_0000010.pt: OK\n", check


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_a_weight_bit(path: Path) -> None:
    """One bit of a stored weight: ``torch.load`` still reads the file, with a changed value."""
    data = bytearray(path.read_bytes())
    data[data.find(fake_state(2)["segmentor"]["w"].numpy().tobytes()) + 100] ^= 0x10
    path.write_bytes(bytes(data))
    assert not torch.equal(
        torch.load(path, weights_only=True)["segmentor"]["w"], fake_state(2)["segmentor"]["w"]
    )


@pytest.mark.parametrize("damage", [truncate, flip_a_weight_bit], ids=["truncated", "bit-flipped"])
def test_a_damaged_checkpoint_is_named_and_passed_over_for_the_previous_intact_one(tmp_path, caplog, damage):
    folder = tmp_path / "runs" / "a" / "checkpoints"
    store = saved(folder, range(1, 3))
    damage(folder / steps_file(2))

    for given in (folder / steps_file(2), folder / "last.pt"):
        with pytest.raises(
            CheckpointError, match=rf"checksum mismatch: {re.escape(str(given))}.* is corrupt"
        ):
            verify(given)
        with pytest.raises(CheckpointError, match=rf"checksum mismatch: {re.escape(str(given))}"):
            checkpoint.load(given)
    verify(folder / steps_file(1))

    with caplog.at_level(logging.WARNING):
        assert store.latest_intact() == folder / steps_file(1)
    assert f"{steps_file(2)} is corrupt" in caplog.text
    assert f"falling back to {folder / steps_file(1)}" in caplog.text
    assert resume_auto(tmp_path, folder) == folder / steps_file(1)
    assert checkpoint.load(folder / steps_file(1))["step"] == 1


def test_resume_auto_refuses_a_run_whose_every_checkpoint_is_damaged(tmp_path, caplog):
    folder = tmp_path / "runs" / "a" / "checkpoints"
    saved(folder, range(1, 3))
    for step in (1, 2):
        truncate(folder / steps_file(step))
    with pytest.raises(CheckpointError, match=rf"no intact checkpoint in {re.escape(str(folder))}"):
        resume_auto(tmp_path, folder)
    assert f"{steps_file(1)} is corrupt" in caplog.text and f"{steps_file(2)} is corrupt" in caplog.text


def test_files_without_a_checksum_are_accepted(tmp_path):
    """Runs from before the store: a plain ``last.pt``, no sidecar; resume=auto and loading still work."""
    folder = tmp_path / "runs" / "old" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(fake_state(4), folder / "last.pt")
    verify(folder / "last.pt")
    assert CheckpointStore(folder).latest_intact() == folder / "last.pt"
    assert resume_auto(tmp_path, folder) == folder / "last.pt"
    assert checkpoint.load(folder / "last.pt")["step"] == 4


class FullDisk(io.FileIO):
    """A file on a disk that takes ``room`` more bytes, then fails as a full one does (ENOSPC)."""

    def __init__(self, path: Path, mode: str) -> None:
        super().__init__(path, mode)
        self.room = 1000

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = super().write(bytes(data)[: self.room])
        self.room -= written
        return written


def fail_fsync(fd: int) -> None:
    """A file system that reports the full disk only when the data is flushed to it (delayed allocation)."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_says_so_and_leaves_the_previous_checkpoint_as_it_was(tmp_path, monkeypatch, where):
    store = saved(tmp_path, range(1, 2))
    before = names(tmp_path)
    with monkeypatch.context() as patch, pytest.raises(CheckpointError) as caught:
        if where == "write":
            full = lambda path, mode: io.BufferedWriter(FullDisk(path, "w"))  # noqa: E731
            patch.setattr(checkpoint_store, "open", full, raising=False)
        else:
            patch.setattr(os, "fsync", fail_fsync)
        store.save(fake_state(2), 2)

    serialized = io.BytesIO()
    torch.save(fake_state(2), serialized)
    needed = serialized.getbuffer().nbytes
    message = str(caught.value)
    assert f"cannot write checkpoint {tmp_path / steps_file(2)}: no space left on device" in message
    assert f"it needs {needed / 2**20:.1f} MiB ({needed} bytes)" in message
    assert f"{tmp_path} has " in message and " free" in message
    assert names(tmp_path) == before  # no temporary file left, nothing half written
    assert os.readlink(tmp_path / "last.pt") == steps_file(1)
    verify(tmp_path / "last.pt")
    assert_holds(tmp_path / "last.pt", 1)


def test_a_killed_write_leaves_no_temporary_file_behind_the_next_save(tmp_path):
    store = saved(tmp_path, range(1, 2))
    (tmp_path / ".step_0000002.pt.4242.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".last.pt.4242.tmp").write_bytes(b"left by the save before the store")
    store.save(fake_state(2), 2)
    assert not [n for n in names(tmp_path) if n.endswith(".tmp")]


def test_a_diverged_state_never_replaces_last_or_a_step_file(tmp_path):
    store = saved(tmp_path, range(1, 3))
    before = {name: (tmp_path / name).read_bytes() for name in names(tmp_path)}
    path = store.save_diverged(fake_state(3), 3)
    assert path == tmp_path / "diverged_0000003.pt"
    verify(path)
    assert_holds(path, 3)
    assert os.readlink(tmp_path / "last.pt") == steps_file(2)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert store.latest_intact() == tmp_path / "last.pt"
    assert_holds(store.latest_intact(), 2)


def test_a_run_resumed_from_an_earlier_step_drops_its_abandoned_continuation(tmp_path, caplog):
    """Files past the step a run resumed from must not pass for its newest (resume=auto would pick them)."""
    store = CheckpointStore(tmp_path, keep_last=3)
    for step, metric in ((2, 0.1), (4, 0.9), (6, 0.2)):
        store.save(fake_state(step), step, metric=metric)
    store.save(fake_state(3), 3)  # resumed from step 2
    assert names(tmp_path) == {
        "last.pt",
        *(f"{steps_file(s)}{ext}" for s in (2, 3) for ext in ("", ".sha256")),
    }
    assert f"removing {tmp_path / steps_file(6)}: written past step 3" in caplog.text
    assert store.latest_intact() == tmp_path / "last.pt"
    assert_holds(tmp_path / "last.pt", 3)

    store.save(fake_state(33), 2)  # a step saved again: the new bytes with their own checksum
    verify(tmp_path / steps_file(2))
    assert_holds(tmp_path / steps_file(2), 33)


def test_a_save_stopped_between_its_renames_leaves_no_checksum_beside_other_bytes(tmp_path, monkeypatch):
    """Saving a step again (a resumed run): had it stopped after the new bytes replaced the old file but
    before their checksum did, the old checksum must not be left to condemn the new, intact file."""
    store = saved(tmp_path, range(1, 3))
    rename = os.replace

    def stop_before_the_checksum(src, dst) -> None:
        if str(dst).endswith(".sha256"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        rename(src, dst)

    with monkeypatch.context() as patch, pytest.raises(CheckpointError, match="Input/output error"):
        patch.setattr(os, "replace", stop_before_the_checksum)
        store.save(fake_state(22), 2)
    verify(tmp_path / steps_file(2))
    assert_holds(tmp_path / steps_file(2), 22)
