"""Which checkpoint a run continues from: ``resume=null | auto | PATH``, and only a run of the same configuration.

A run is continued only when its stored configuration equals the requested one in everything but what a
resume may change (``RESUMABLE``), so that a ``resume=auto`` sweep point finds its own point and never an
unrelated run of the task; ``resume=PATH`` with another configuration is refused naming the keys unless
``resume_force=true``; a requeued Slurm job resumes without being asked. See docs/reliability.md#resume.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from refign.engine import checkpoint
from refign.engine.checkpoint_store import CheckpointStore
from refign.models.weights import CheckpointError

log = logging.getLogger(__name__)

# Keys (and key prefixes) whose values a resumed run may change: how long and how often, where files go,
# how it is logged, where it runs. Everything else (method, data, seed, optimiser, schedule …) must be equal.
RESUMABLE = (
    "task_name",  # a name for where runs go: resume=PATH continues in the checkpoint's own folder anyway
    "resume",
    "resume_force",
    "paths",
    "logger",
    "trainer.max_steps",
    "trainer.log_every",
    "trainer.image_every",
    "trainer.eval_every",
    "trainer.checkpoint_every",
    "trainer.keep_checkpoints",
    "trainer.num_workers",
    "trainer.eval_batch_size",
    "trainer.device",
    "trainer.stop_signals",
    "trainer.requeue",
    # files whose weights a resume replaces (the start of the segmentor, the ImageNet backbone) or checks by
    # fingerprint (Refign's matcher: RefignPseudoLabeler.set_extra_state), so only their path may differ
    "init_weights",
    "backbone.pretrained",
    "alignment.checkpoint",
)


@dataclass(frozen=True)
class ResumePlan:
    """Where a run continues from (``state`` None: a fresh run) and the folder it writes to."""

    state: dict | None
    source: Path | None
    run_dir: Path


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists are values (compared whole)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    return flat


def differences(stored: dict, requested: dict) -> dict[str, tuple[Any, Any]]:
    """The keys whose values differ (``key: (stored, requested)``), what a resume may change left out."""
    a, b = flatten(stored), flatten(requested)

    def resumable(key: str) -> bool:
        return any(key == r or key.startswith(f"{r}.") for r in RESUMABLE)

    # a key absent on one side is read as null: a newer version's key whose default (null) keeps the old
    # behaviour, e.g. ``ablation_row`` in runs from before it, is no difference
    return {
        k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if not resumable(k) and a.get(k) != b.get(k)
    }


def describe(diff: dict[str, tuple[Any, Any]], limit: int = 8) -> str:
    shown = [f"{k} ({old!r} → {new!r})" for k, (old, new) in list(diff.items())[:limit]]
    return ", ".join(shown) + (f" … (+{len(diff) - limit})" if len(diff) > limit else "")


def find_same_run(task_root: Path, requested: dict) -> Path | None:
    """The newest intact checkpoint of the most recently written run of ``requested``'s configuration under
    ``task_root`` (single runs and every sweep's points). The runs passed over, and why, are logged; a newer
    checkpoint that fails its checksum is passed over with a warning (``CheckpointStore.latest_intact``)."""
    matching: list[CheckpointStore] = []
    for folder in [*task_root.glob("runs/*/checkpoints"), *task_root.glob("multirun/*/*/checkpoints")]:
        store = CheckpointStore(folder)
        if not store.checkpoints():
            continue
        stored = store.config()
        if stored is None:
            log.info("resume=auto: %s has no readable configuration, passed over", folder.parent)
        elif diff := differences(stored, requested):
            log.info(
                "resume=auto: passed over %s, another configuration: %s", folder.parent, describe(diff, 4)
            )
        else:
            matching.append(store)
    if not matching:
        return None
    newest = max(matching, key=lambda s: s.checkpoints()[0].stat().st_mtime)
    path = newest.latest_intact()
    if path is None:
        raise CheckpointError(
            f"resume=auto: no intact checkpoint in {newest.folder} (each failed its checksum, see the warnings "
            "above); resume=PATH from another checkpoint, or start afresh without resume"
        )
    return path


def plan(cfg: DictConfig, task_root: Path, run_dir: Path) -> ResumePlan:
    """The checkpoint (loaded) and run folder for ``cfg.resume`` = null (fresh), ``auto`` (the newest run of
    the same configuration under ``task_root``) or a path; the run folder is created. The configuration is
    resolved only to resume: a fresh run's build checks it first, with errors that name the key at fault."""
    resume = cfg.resume
    if resume in (None, "", False) and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        log.info(
            "requeued Slurm job (SLURM_RESTART_COUNT=%s): resume=auto", os.environ["SLURM_RESTART_COUNT"]
        )
        resume = "auto"
    path, state = None, None
    if resume not in (None, "", False):
        requested = OmegaConf.to_container(cfg, resolve=True)
        path = find_same_run(task_root, requested) if resume == "auto" else Path(resume)
        if path is None:
            log.info("resume=auto: no previous run of this configuration under %s, starting fresh", task_root)
    if path is not None:
        state = checkpoint.load(path)
        check_same_config(state.get("config"), requested, path, cfg.resume_force)
        if path.parent.name == "checkpoints":
            run_dir = path.parent.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    return ResumePlan(state, path, run_dir)


def check_same_config(stored: dict | None, requested: dict, source: Path, force: bool) -> None:
    """Refuse to continue ``source`` with another configuration (``force``: warn instead)."""
    if stored is None:
        log.warning("%s stores no configuration: cannot check that it is the same run", source)
        return
    diff = differences(stored, requested)
    if not diff:
        return
    what = f"{source} was trained with another configuration: {describe(diff)}"
    if not force:
        raise CheckpointError(
            f"{what}. Resume with the run's own settings, or add resume_force=true to continue it anyway "
            "with the new ones"
        )
    log.warning("resume_force=true: continuing %s", what)
