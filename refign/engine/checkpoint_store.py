"""The checkpoints of one run (``<run_dir>/checkpoints/``): each written completely or not at all, verifiable,
and few. The files: docs/checkpoints.md#checkpoint-folder; the faults they survive: docs/reliability.md.

Why each step, as in databases and torchtitan: a crash mid-write must leave the previous checkpoint as it was
(a temporary file, flushed, fsynced, renamed, then the folder fsynced so that the rename survives a power
loss); corruption after writing must be detected, not loaded (``verify``); a diverged state never takes a good
one's place (``save_diverged``). One process writes a folder (rank 0 under DDP).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from refign.models.weights import CheckpointError
from refign.utils.safe_load import load_torch

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
BEST_RECORD = "best.json"
CONFIG_RECORD = "config.json"  # the run's resolved configuration, written when it starts
_STEP = re.compile(r"step_(\d+)\.pt")
_SIDECAR_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)\n?")
_TEMP = re.compile(r"\..+\.\d+\.tmp")
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "no space: disk quota exceeded"}


def sidecar(path: Path) -> Path:
    """The checksum file of ``path``."""
    return path.with_name(f"{path.name}.sha256")


def verify(path: str | os.PathLike) -> None:
    """Raise ``CheckpointError`` naming the file if its bytes differ from the sha256 in its sidecar (a
    symlink's: its target's). A file without a sidecar is accepted: runs from before the checksums and files
    from elsewhere (downloaded, ``cp``-ed) have none, and refusing them would lock users out of their runs."""
    given = Path(path)
    file = given.resolve()
    record = sidecar(file)
    if not record.is_file():
        return
    shown = f"{given} (-> {file.name})" if given.is_symlink() else str(given)
    match = _SIDECAR_LINE.fullmatch(record.read_text(errors="replace"))
    if match is None:
        raise CheckpointError(f"{record} is not a sha256 checksum line ('<64 hex digits>  <name>'): {shown}")
    try:
        with open(file, "rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {shown}: {err}") from err
    if actual != match[1]:
        raise CheckpointError(
            f"checksum mismatch: {shown} is corrupt (truncated or changed after writing): its sha256 is "
            f"{actual}, {record.name} records {match[1]}"
        )


def load(path: str | os.PathLike) -> dict:
    """A checkpoint, after its checksum (``verify``), read without running code (``refign.utils.safe_load``;
    format-3 files of before the random states became tensors and lists load through its allow-list)."""
    verify(path)
    return load_torch(path, what="checkpoint")


class CheckpointStore:
    """The checkpoints of one run in ``folder`` (``<run_dir>/checkpoints``)."""

    def __init__(self, folder: Path, keep_last: int = 2) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last (trainer.keep_checkpoints) must be at least 1, got {keep_last}")
        self.folder = Path(folder)
        self.keep_last = keep_last

    def save(self, state: dict[str, Any], step: int, *, metric: float | None = None) -> Path:
        """Write ``state`` as the checkpoint of ``step`` and point ``last.pt`` at it; with ``metric`` (higher
        is better), also ``best.pt`` when it beats the best so far. Then remove the step files beyond the
        newest ``keep_last`` (the best is kept), and those of steps after ``step``: a run resumed from an
        earlier checkpoint abandoned them, and they must not pass for its newest. A failed write raises
        ``CheckpointError`` and leaves the checkpoints written before as they were."""
        path = self._write(state, f"step_{step:07d}.pt")
        self._point(LAST, path)
        if metric is not None:
            self._update_best(path, step, metric)
        self._rotate(step)
        return path

    def mark_best(self, step: int, metric: float) -> None:
        """Make the checkpoint of ``step`` ``best.pt`` if ``metric`` beats the best so far: for a run that
        evaluates after writing the checkpoint of the step (so that a failed evaluation loses nothing)."""
        path = self.folder / f"step_{step:07d}.pt"
        if path.is_file():
            self._update_best(path, step, metric)

    def save_diverged(self, state: dict[str, Any], step: int) -> Path:
        """Keep a state the run stopped on (non-finite values) for inspection, as ``diverged_<step>.pt``:
        never ``last.pt`` nor a step file, so that resuming continues from the last good state."""
        return self._write(state, f"diverged_{step:07d}.pt")

    def discard_from(self, step: int) -> list[Path]:
        """Set aside the step files of ``step`` and later as ``diverged_<step>.pt`` (with their checksums) and
        point ``last.pt`` (and ``best.pt``) back at what remains: when a run diverges, the checkpoints written
        since its last step with a finite loss may hold the update that blew up (its own loss was finite)."""
        moved = []
        for s, path in sorted(self._steps().items()):
            if s < step:
                continue
            target = self.folder / f"diverged_{s:07d}.pt"
            os.replace(path, target)
            if sidecar(path).exists():
                sidecar(target).write_text(sidecar(path).read_text().replace(path.name, target.name))
                sidecar(path).unlink()
            moved.append(target)
        if not moved:
            return moved
        last = self.folder / LAST
        if last.is_symlink() and not last.exists():  # it pointed at a file set aside
            last.unlink()
            if remaining := self.checkpoints():
                self._point(LAST, remaining[0])
        self._drop_lost_best()
        log.warning(
            "set aside %s: written after the last step with a finite loss", ", ".join(p.name for p in moved)
        )
        return moved

    def write_config(self, config: dict) -> None:
        """Record the run's configuration (rank 0, when the run starts): what ``resume=auto`` matches."""
        self.folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.folder / CONFIG_RECORD, json.dumps(config, indent=1, default=str))

    def config(self) -> dict | None:
        """The configuration the run was started with: its record, else (runs from before the record) the one
        in its last checkpoint; None when neither can be read."""
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.folder / CONFIG_RECORD).read_text())
        try:
            return load(self.folder / LAST).get("config")
        except CheckpointError:
            return None

    def checkpoints(self) -> list[Path]:
        """The step files, newest first; for a run from before step files, its ``last.pt`` alone."""
        steps = self._steps()
        if steps:
            return [steps[s] for s in sorted(steps, reverse=True)]
        last = self.folder / LAST
        return [last] if last.is_file() and not last.is_symlink() else []

    def latest_intact(self) -> Path | None:
        """The newest checkpoint that passes ``verify`` (``last.pt`` when it points there), None if none does.
        Each newer file that fails is named in a warning, with the one this falls back to."""
        failed: list[str] = []
        for path in self.checkpoints():
            try:
                verify(path)
            except CheckpointError as err:
                failed.append(str(err))
                continue
            if failed:
                log.warning("%s; falling back to %s", "; ".join(failed), path)
            last = self.folder / LAST
            return last if last.is_symlink() and last.resolve() == path.resolve() else path
        if failed:
            log.warning("%s; no intact checkpoint left in %s", "; ".join(failed), self.folder)
        return None

    # ---- writing -----------------------------------------------------------------------------------------
    def _write(self, state: dict[str, Any], name: str) -> Path:
        """``state`` to ``folder/name`` with its sidecar, each via an fsynced temporary file and a rename."""
        path = self.folder / name
        record = sidecar(path)
        tmp, tmp_record = _temp(path), _temp(record)
        sink = _Sink()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temps()
            _write_synced(tmp, lambda f: torch.save(state, sink.into(f)))
            _write_synced(tmp_record, lambda f: f.write(f"{sink.sha256.hexdigest()}  {name}\n".encode()))
            record.unlink(missing_ok=True)  # an abandoned file of this step: never its checksum by new bytes
            os.replace(tmp, path)
            os.replace(tmp_record, record)
            _sync_folder(self.folder)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            tmp_record.unlink(missing_ok=True)
            failure = sink.error or err  # torch.save reports a failed write as a RuntimeError without errno
            if isinstance(failure, OSError):
                raise self._write_error(path, state, failure) from err
            raise
        return path

    def _write_error(self, path: Path, state: dict[str, Any], err: OSError) -> CheckpointError:
        if err.errno not in _NO_SPACE:
            return CheckpointError(f"cannot write checkpoint {path}: {err}")
        needed = _Sink()
        torch.save(state, needed)  # counted, not written
        where = next(p for p in (self.folder, *self.folder.parents) if p.exists())
        return CheckpointError(
            f"cannot write checkpoint {path}: {_NO_SPACE[err.errno]}; it needs {_size(needed.size)}, {where} "
            f"has {_size(shutil.disk_usage(where).free)} free (the checkpoints written before are intact)"
        )

    def _point(self, name: str, target: Path) -> None:
        """Make ``folder/name`` a relative symlink to ``target``, replaced in one rename."""
        link = self.folder / name
        tmp = _temp(link)
        try:
            tmp.unlink(missing_ok=True)
            os.symlink(target.name, tmp)
            os.replace(tmp, link)
            _sync_folder(self.folder)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"cannot point {link} at {target.name}: {err}") from err

    def _update_best(self, path: Path, step: int, metric: float) -> None:
        best = self._best()
        if best is not None and metric <= best["metric"]:
            return
        record = self.folder / BEST_RECORD
        tmp = _temp(record)
        text = json.dumps({"file": path.name, "step": step, "metric": float(metric)}) + "\n"
        try:
            _write_synced(tmp, lambda f: f.write(text.encode()))
            os.replace(tmp, record)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise CheckpointError(f"cannot write {record}: {err}") from err
        self._point(BEST, path)

    def _best(self) -> dict[str, Any] | None:
        record = self.folder / BEST_RECORD
        return json.loads(record.read_text()) if record.is_file() else None

    def _rotate(self, step: int) -> None:
        steps = self._steps()
        kept = sorted(s for s in steps if s <= step)[-self.keep_last :]
        spared = self._best_files()
        for s, path in steps.items():
            if s > step:
                log.warning(
                    "removing %s: written past step %d by a continuation this run abandoned", path, step
                )
            elif s in kept or path.name in spared:
                continue
            path.unlink()
            sidecar(path).unlink(missing_ok=True)
        self._drop_lost_best()

    def _drop_lost_best(self) -> None:
        """Remove ``best.pt`` and ``best.json`` once the file they name is gone (set aside or abandoned with
        its step); make the folder's changes durable."""
        if not (self.folder / BEST).exists():  # exists() follows the link
            (self.folder / BEST).unlink(missing_ok=True)
            (self.folder / BEST_RECORD).unlink(missing_ok=True)
        _sync_folder(self.folder)

    def _best_files(self) -> set[str]:
        """The file ``best.pt`` points at and the one ``best.json`` names: they differ only after a crash
        between the two writes, and then both are kept."""
        best = self._best()
        files = {best["file"]} if best else set()
        if (self.folder / BEST).is_symlink():
            files.add(os.readlink(self.folder / BEST))
        return files

    def _steps(self) -> dict[int, Path]:
        if not self.folder.is_dir():
            return {}
        return {int(m[1]): p for p in self.folder.iterdir() if (m := _STEP.fullmatch(p.name))}

    def _remove_stale_temps(self) -> None:
        """Temporary files of writes that were killed (one per crash would otherwise fill the disk)."""
        for path in self.folder.iterdir():
            if _TEMP.fullmatch(path.name):
                path.unlink(missing_ok=True)


class _Sink:
    """What ``torch.save`` streams into a file, hashed and counted on the way (no second read of the file).
    It keeps the ``OSError`` of a failed write, which ``torch.save`` re-raises as a ``RuntimeError`` without
    errno. Without a file it only counts: the size a failed write needed."""

    def __init__(self) -> None:
        self.file: IO[bytes] | None = None
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.error: OSError | None = None

    def into(self, file: IO[bytes]) -> _Sink:
        self.file = file
        return self

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._on_file(lambda f: f.write(view))
        self.sha256.update(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        self._on_file(lambda f: f.flush())

    def _on_file(self, op: Callable[[IO[bytes]], Any]) -> None:
        try:
            if self.file is not None:
                op(self.file)
        except OSError as err:
            self.error = err
            raise


def _temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path``'s text in one rename, so that a reader (or a kill) never sees half of it: the small
    records beside a run (its configuration, ``metrics.jsonl`` cut at a resume, the wandb run's identity)."""
    tmp = _temp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_synced(path: Path, fill: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` with ``fill`` and wait until its bytes are on the disk (``fsync``)."""
    with open(path, "wb") as f:
        fill(f)
        f.flush()
        os.fsync(f.fileno())


def _sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable: a rename lives in the folder's entry, which the file's fsync
    does not write."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB ({n} bytes)"
