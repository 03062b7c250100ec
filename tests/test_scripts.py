"""Every script answers ``--help`` with its usage and exit status 0, and scripts/README.md has its paragraph."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
# a script runs its main when started; a module without one (scripts/measure/common.py) is a library
PYTHON = sorted(p for p in SCRIPTS.rglob("*.py") if 'if __name__ == "__main__":' in p.read_text())
SHELL = sorted(SCRIPTS.rglob("*.sh"))


def name(path: Path) -> str:
    return str(path.relative_to(SCRIPTS))


def test_the_scripts_are_found():
    assert {"measure/dry_run.py", "gpu/wheelhouse.py", "benchmark.py"} <= set(map(name, PYTHON))
    assert {"install.sh", "gpu/gpu_check.sh"} == set(map(name, SHELL))
    assert "measure/common.py" not in map(name, PYTHON)


@pytest.mark.filterwarnings("ignore:'scripts.*' found in sys.modules:RuntimeWarning")  # imported by a test
@pytest.mark.parametrize("path", PYTHON, ids=name)
def test_a_python_script_answers_help(path, monkeypatch, capsys):
    """Run as the README runs it (``python -m scripts.<…>``), in this process: the imports are paid once."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module(module, run_name="__main__")
    assert done.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--help" in out


@pytest.mark.parametrize("path", SHELL, ids=name)
def test_a_shell_script_answers_help_without_running(path):
    done = subprocess.run(["bash", str(path), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    header = path.read_text().splitlines()[1].removeprefix("# ")  # the comment block under the shebang
    assert done.stdout.startswith(header)


def test_the_index_has_a_paragraph_for_every_script():
    index = (SCRIPTS / "README.md").read_text()
    missing = [name(p) for p in PYTHON + SHELL if f"`{name(p)}`" not in index]
    assert missing == []
