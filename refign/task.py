"""How every entry point starts a task: Hydra over ``conf/``, a user's error reported as one line
(docs/running.md#errors), and the trainings' one sequence (``fit``).

Every ``python -m refign.<tool>`` is declared with ``@entry_point("<config>")`` in place of ``@hydra.main``. A
user error (``USER_ERRORS``) is printed on stderr as one line naming the file or key, with a hint line, and the
process exits with status 2 (``EXIT_USER_ERROR``); ``HYDRA_FULL_ERROR=1``, Hydra's own switch, shows the full
traceback instead. Any other exception is a bug: it keeps its full traceback (exit status 1).

Hydra prints its own errors (an unknown key, a missing group option) over several lines and exits 1 before the
job runs; Hydra raises them instead when ``HYDRA_FULL_ERROR=1`` is set, so ``entry_point`` sets it while Hydra
runs and reports them here. Inside a single run the job reports its error itself, before Hydra adds its
"Error executing job" line; in a sweep (``-m``) the error reaches Hydra, which runs the other points first.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra import initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from refign.data.io import DatasetError
from refign.engine import resume
from refign.engine.dist import DistInfo
from refign.engine.preemption import StopSignals
from refign.engine.reproducibility import seed_everything
from refign.engine.trainer import Trainer
from refign.inference.media import InputError
from refign.models.weights import CheckpointError

EXIT_USER_ERROR = 2
DEBUG_ENV = "HYDRA_FULL_ERROR"
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Errors of the input, not of the code. ValueError covers ConfigError and the constructors' checks of their
# arguments, which name the key at fault.
USER_ERRORS = (
    ValueError,
    DatasetError,
    CheckpointError,
    InputError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    OmegaConfBaseException,
    CompactHydraException,
)
# Keys an entry point's configuration no longer has, and the key that took their place: for an override of the
# old name Hydra suggests adding it with `+`, a key nothing would read.
RENAMED = {"align_train": {"dataset": "pairs", "align_data": "pairs"}, "check_data": {"align_data": "pairs"}}
# how torch's ExceptionWrapper re-raises an error of a DataLoader worker: its message holds the worker's traceback
WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"


class _Reporting:
    """Whether ``entry_point`` is running Hydra in this process: a single run's job then reports a user error
    itself. A class attribute, not a ``ContextVar``: the parallel sweep launcher (joblib) pickles the job, and
    a class pickles by reference where a ``ContextVar`` cannot be pickled at all."""

    on = False


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line: a DataLoader worker's error without the worker's traceback, an
    OmegaConf error with the key it concerns, a Hydra composition error with its cause or the group's options."""
    text = str(err).strip()
    if isinstance(err, OmegaConfBaseException):  # its message goes on with "full_key: …", "object_type=…"
        return text.splitlines()[0] + (f" (key {err.full_key})" if err.full_key else "")
    if WORKER_TRACEBACK in text:  # the traceback ends with "<module>.<Type>: <the worker's message>"
        name = f"{type(err).__module__}.{type(err).__qualname__}".removeprefix("builtins.")
        text = text.rpartition(f"\n{name}: ")[2]
    line = " ".join(part.strip() for part in text.split("\n\n")[0].splitlines() if part.strip())
    if isinstance(err, CompactHydraException) and isinstance(err.__cause__, OmegaConfBaseException):
        line += f" ({one_line(err.__cause__)})"
    if getattr(err, "options", None):  # hydra.errors.MissingConfigException: the group's choices
        line += f" (available: {', '.join(err.options)})"
    return line or type(err).__name__


def renamed(config_name: str, err: BaseException) -> str:
    """`` ('<old>' is now '<new>')`` when ``err`` refuses an override of a renamed key (``RENAMED``), else ''."""
    found = re.match(r"Could not override '(\w+)", str(err))
    new = found and RENAMED.get(config_name, {}).get(found[1])
    return f" ('{found[1]}' is now '{new}')" if new else ""


def report(prog: str, err: BaseException, note: str = "") -> NoReturn:
    """Print ``err`` as one line (then ``note``) and a hint; exit with ``EXIT_USER_ERROR``."""
    print(f"{prog}: error: {one_line(err)}{note}", file=sys.stderr)
    print(f"({DEBUG_ENV}=1 shows the full traceback)", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def compose(config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides``, composed as its entry point composes it, for code that
    runs outside one (the scripts, the tests, the assets' scores); ``return_hydra_config`` keeps ``hydra.*``."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra.compose(config_name, list(overrides), return_hydra_config=return_hydra_config)


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """``hydra.main`` over ``conf/<config_name>.yaml`` for the task function it decorates, with user errors
    reported as one line (see the module docstring)."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        file = Path(inspect.getfile(task))  # refign/train.py, or a package's refign/estimate/__main__.py
        prog = f"refign.{file.parent.name if file.stem == '__main__' else file.stem}"

        @functools.wraps(task)
        def job(cfg: DictConfig) -> Any:
            try:
                return task(cfg)
            except USER_ERRORS as err:
                if _Reporting.on and HydraConfig.get().mode == RunMode.RUN:
                    report(prog, err)
                raise

        # Hydra names the job (its log file) after the task's module: this one's, not ``__main__`` or cli
        job.__module__ = prog
        hydra_main = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(job)

        @functools.wraps(task)
        def main() -> Any:
            if os.environ.get(DEBUG_ENV) == "1":
                return hydra_main()
            before, _Reporting.on = _Reporting.on, True
            try:
                with _env(DEBUG_ENV, "1"):  # Hydra raises its errors rather than printing them
                    return hydra_main()
            except USER_ERRORS as err:
                report(prog, err, renamed(config_name, err))
            finally:
                _Reporting.on = before

        return main

    return decorate


def output_dir(cfg: DictConfig) -> Path:
    """Where a task writes: its ``out_dir`` where the tool has one and it is set, else Hydra's run folder."""
    return Path(cfg.get("out_dir") or HydraConfig.get().runtime.output_dir)


def fit(
    cfg: DictConfig, run_dir: Path, info: DistInfo, make_trainer: Callable[..., Trainer]
) -> tuple[dict, Path]:
    """A training task inside its ``task_session``: resolve resume (the run of the same configuration) → seed
    → ``make_trainer(cfg, run_dir, info)`` → restore → fit under the stop signals → close, for both trainings.
    Returns the final evaluation and the run folder (a resumed run continues its own). The trainer lives in
    this frame only, so that ``dist.session`` can free it before the process group goes (see there)."""
    start = resume.plan(cfg, Path(cfg.paths.output_dir) / cfg.task_name, run_dir)
    seed_everything(cfg.seed + info.rank)
    trainer = make_trainer(cfg, start.run_dir, info)
    try:
        if start.state is not None:
            trainer.restore(start.state, start.source)
        with StopSignals(cfg.trainer.stop_signals) as stop:
            return trainer.fit(stop), start.run_dir
    finally:
        trainer.close()
