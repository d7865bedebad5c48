"""README is the user's manual: its cheap runnable commands must run as written, and CI must run its test command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# A fenced block preceded by `<!-- runnable -->` holds commands this test runs from the repo root.
RUNNABLE = re.compile(r"<!-- runnable -->\s*```(?:bash|sh)\n(.*?)```", re.S)


def runnable_commands() -> list[str]:
    commands = []
    for block in RUNNABLE.findall(README):
        commands += [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def test_ci_runs_the_readme_test_command():
    marker = README.index("<!-- ci-test-command -->")
    command = README[marker:].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert "pytest" in command and command.startswith('pip install -e ".[dev]"')
    assert "ci-test-command" in (ROOT / ".ci" / "run").read_text()


def test_readme_has_runnable_commands():
    assert len(runnable_commands()) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("command", runnable_commands())
def test_readme_command_runs_as_written(command, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"`{command}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
