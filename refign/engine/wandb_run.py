"""A run on the wandb dashboard: who it is (name, group, job type, tags, from the Hydra job, as Hydra's wandb
conventions have it) and one wandb run per training across its resumes (the id kept with the run, as
Lightning's ``WandbLogger`` does; steps already sent never sent again). See docs/configuration.md#wandb.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from refign.engine.checkpoint_store import write_text_atomic
from refign.utils.resolvers import short_dirname

log = logging.getLogger(__name__)

RUN_FILE = "wandb_run.json"  # in the run folder: the wandb run of this training (id, name, group, last step)
SWITCHES = ("refign", "mic", "rcs")  # groups with an `enabled` switch that make a tag when on


def identity(cfg: DictConfig, job_type: str) -> dict[str, Any]:
    """``name``, ``group``, ``job_type`` and ``tags`` for ``wandb.init`` (docs/configuration.md#wandb). A
    sweep point is named by its overrides, as its folder (``hydra.sweep.subdir``) without the number, and
    grouped by its sweep (the task name and the sweep's time: ``hydra.sweep.dir``'s name), so that wandb's
    grouping averages over the points that differ only in ``seed``. ``logger.wandb.name`` / ``.group`` win."""
    user = cfg.logger.wandb
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    sweep = hydra is not None and hydra.mode == RunMode.MULTIRUN
    name = short_dirname(hydra.job.override_dirname) if sweep else ""
    group = f"{cfg.task_name}-{Path(hydra.sweep.dir).name}" if sweep else None
    return {
        "name": user.get("name") or name or cfg.task_name,
        "group": user.get("group") or group,
        "job_type": job_type,
        "tags": tags(cfg, dict(hydra.runtime.choices) if hydra is not None else {}),
    }


def tags(cfg: DictConfig, choices: dict[str, str | None]) -> list[str]:
    """The method, the experiment, the dataset, each switch that is on, the ablation row, the matcher's stage,
    then the user's ``logger.wandb.tags``. Outside a Hydra job (a configuration composed in Python) the method
    is the module of ``uda._target_``."""
    if "uda" in cfg:
        method = choices.get("uda") or cfg.uda._target_.rsplit(".", 2)[-2]
    else:
        method = choices.get("alignment")
    data = OmegaConf.select(cfg, "dataset.name") or OmegaConf.select(cfg, "pairs.name")
    found = [method, choices.get("experiment"), data]
    for switch in SWITCHES:
        if OmegaConf.select(cfg, f"{switch}.enabled"):
            found += [switch, choices.get("alignment")] if switch == "refign" else [switch]
    if cfg.get("ablation_row") is not None:
        found.append(f"ablation-row{cfg.ablation_row}")
    if cfg.get("stage") is not None:
        found.append(f"stage{cfg.stage}")
    found += list(cfg.logger.wandb.get("tags") or [])
    return list(dict.fromkeys(str(t) for t in found if t))


class WandbRun:
    """The wandb run of one training, started at its first use.

    A resumed training continues the run whose id its checkpoint stores (else the run folder's
    ``wandb_run.json``), keeping its name and group. wandb takes only increasing steps, and the steps between
    the checkpoint and the interruption were sent already (the re-run computes them bit for bit the same):
    they are not sent again. A training that starts from step 0 is a new run, also in a folder that had one.

    ``init``: keyword arguments for ``wandb.init`` (``mode``, ``project``, ``name``, ``group``, ``tags`` …);
    ``wandb/`` and ``wandb_run.json`` go into ``run_dir``.
    """

    def __init__(self, run_dir: Path, init: dict[str, Any], config: dict | None) -> None:
        self.run_dir, self.init, self.config = Path(run_dir), dict(init), config
        self.file = self.run_dir / RUN_FILE
        self.run = None
        self.id: str | None = None
        self.sent_before = -1  # the last step an earlier attempt sent: later ones only are sent
        self.last_step = -1

    def state_dict(self) -> dict[str, Any]:
        """Plain values (the checkpoint loads with ``weights_only=True``)."""
        named = {k: self.init.get(k) for k in ("name", "group")}
        return {"id": self.id, **named, "last_step": self.last_step}

    def resume(self, state: dict | None) -> None:
        """Continue the run of a restored checkpoint's ``state`` (or of the run folder)."""
        state = state or {}
        stored = json.loads(self.file.read_text()) if self.file.is_file() else {}
        self.id = state.get("id") or stored.get("id")
        if self.id is None:
            return
        known = stored if stored.get("id") == self.id else state  # the folder's file is the more recent
        self.init.update({k: known[k] for k in ("name", "group") if known.get(k)})
        self.sent_before = self.last_step = max(known.get("last_step", -1), state.get("last_step", -1))
        log.info(
            "wandb: continuing run %s (%s); steps up to %d were sent before the interruption and are not "
            "sent again",
            self.id,
            self.init.get("name"),
            self.sent_before,
        )

    def _start(self):
        if self.run is None:
            import wandb  # imported lazily: only rank 0 of runs that ask for it pays for it

            if self.id is None:
                if self.file.is_file():
                    log.info("wandb: the training starts at step 0, a new run (%s had another)", self.file)
                self.id = secrets.token_hex(6)  # not from the seeded generators the training draws from
            self.run = wandb.init(
                dir=str(self.run_dir), config=self.config, id=self.id, resume="allow", **self.init
            )
            write_text_atomic(self.file, json.dumps(self.state_dict()))
        return self.run

    def log(self, data: dict[str, Any], step: int) -> None:
        """Send ``data`` at ``step`` unless an earlier attempt of this training sent that step already."""
        if step <= self.sent_before:
            return
        self._start().log(data, step=step)
        if step > self.last_step:
            self.last_step = step
            write_text_atomic(self.file, json.dumps(self.state_dict()))

    def summarize(self, values: dict[str, Any]) -> None:
        """Set the run's summary entries (what the runs table shows and sorts by)."""
        self._start().summary.update(values)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def log_table(
    key: str, columns: list[str], rows: list[list], out_dir: Path, root: Path, group: str | None = None
) -> Path:
    """A results table as a wandb run of its own (``job_type="table"``), in the logger's mode and project
    (``conf/logger/wandb.yaml``: offline); returns the run's local folder. ``scripts/bench_refign.py --wandb``
    and ``scripts/ablation_table.py --wandb``: the README's tables as a dashboard panel, beside the sweep's
    runs when ``group`` is the sweep's."""
    import wandb

    out_dir.mkdir(parents=True, exist_ok=True)
    node = OmegaConf.load(root / "conf" / "logger" / "wandb.yaml").wandb  # the scripts compose no Hydra
    init = {"mode": node.mode, "project": node.project}
    run = wandb.init(dir=str(out_dir), name=key, group=group, job_type="table", **init)
    run.log({key: wandb.Table(columns=columns, data=rows)})
    folder = Path(run.dir).parent
    run.finish()
    return folder
