"""Import contracts that follow the package layout, read from the source with ``ast`` (nothing is imported):
the model stands alone, the config module is a leaf, and only the CLI imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "srdd_scale"


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of every srdd_scale module ``path`` imports (relative imports resolved), at any depth."""
    package = path.relative_to(root).parent.parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # `from . import x` is this package, `from .. import x` its parent
                base = ".".join(package[: len(package) - node.level + 1] + ((base,) if base else ()))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {n for n in names if n == "srdd_scale" or n.startswith("srdd_scale.")}


def violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {name}" for path in files for name in sorted(imported_modules(path))
            if any(name == f or name.startswith(f + ".") for f in forbidden)]


def package_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (PACKAGE / folder).rglob("*.py"))


def test_model_imports_nothing_from_train_data_export_or_cli():
    assert violations(package_files("model"), ("srdd_scale.train", "srdd_scale.data", "srdd_scale.export",
                                               "srdd_scale.cli")) == []


def test_config_module_imports_no_srdd_scale_module():
    assert sorted(imported_modules(PACKAGE / "config.py")) == []


def test_only_the_cli_imports_the_cli():
    others = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]
    assert violations(others, ("srdd_scale.cli",)) == []


def test_the_checker_sees_every_import_form(tmp_path):
    module = tmp_path / "srdd_scale" / "model" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text("import srdd_scale.data.mds\nfrom ..train import trainer\nfrom .blocks import Block\n"
                      "def late():\n    from srdd_scale import cli\n")
    assert imported_modules(module, tmp_path) == {
        "srdd_scale.data.mds", "srdd_scale.train", "srdd_scale.train.trainer", "srdd_scale.model.blocks",
        "srdd_scale.model.blocks.Block", "srdd_scale", "srdd_scale.cli"}
