"""The CLI package: every console script resolves to a ``main`` wrapped by ``entry_point`` (readable OS errors),
and every tools/ script is a shim onto one."""

import importlib
import re
from pathlib import Path

import tomllib

from srdd_scale.cli import entry_point

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
WRAPPED_CODE = entry_point(lambda argv: 0).__code__


def test_every_console_script_is_a_cli_main():
    modules = set()
    for name, target in SCRIPTS.items():
        module_name, function = target.split(":")
        assert name.startswith("srdd-") and module_name.startswith("srdd_scale.cli."), (name, target)
        main = getattr(importlib.import_module(module_name), function)
        assert main.__code__ is WRAPPED_CODE, f"{target} is not wrapped by srdd_scale.cli.entry_point"
        modules.add(module_name.rsplit(".", 1)[1])
    cli_modules = {p.stem for p in (ROOT / "srdd_scale" / "cli").glob("*.py") if "\ndef main(" in p.read_text()}
    assert modules == cli_modules


def test_every_tool_script_is_a_shim_with_a_console_script():
    installed = {target.split(":")[0] for target in SCRIPTS.values()}
    for script in sorted((ROOT / "tools").glob("*.py")):
        text = script.read_text()
        (module,) = re.findall(r"^from (srdd_scale\.cli\.\w+) import main$", text, re.M)
        assert module == f"srdd_scale.cli.{script.stem}" and module in installed, script
        assert len(text.splitlines()) <= 10, f"{script} holds more than a shim"
