"""Method citations in the code resolve: every `docs/method.md §N` names a heading of docs/method.md.

Code comments explain choices by pointing at the method document; a citation of a section that does not exist
(renumbered, misspelt, or a file outside the repository) leaves the reader with nothing to follow.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"
CODE_DIRS = ("srdd_scale", "tools", "tests", "configs", "slurm")
SUFFIXES = {".py", ".yaml", ".yml", ".sh", ".md", ".toml"}
HEADING = re.compile(r"^#{2,4} §(\d+(?:\.\d+)*) ", re.MULTILINE)
# "docs/method.md §6.5, §9.10", "docs/method.md §5.2 / §9.3", "docs/method.md §4.3-§4.5": every § after the path,
# on the same line, is a citation of this document.
CITING_LINE = re.compile(r"docs/method\.md(.*)")
SECTION = re.compile(r"§([\w.]*\w)")
OLD_REFERENCE = "srdd-method" + ".md"  # split so that this file does not match its own search


def code_files(dirs=CODE_DIRS):
    for name in dirs:
        for path in sorted((ROOT / name).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                yield path


def cited_files():
    """The code, plus README.md and docs/*.md (method.md and this file only describe the citation form)."""
    yield from (path for path in code_files() if path != Path(__file__).resolve())
    yield ROOT / "README.md"
    yield from (path for path in sorted((ROOT / "docs").glob("*.md")) if path != METHOD)


def method_sections() -> set[str]:
    return set(HEADING.findall(METHOD.read_text(encoding="utf-8")))


def citations(text: str) -> list[tuple[int, str]]:
    """(line number, section) of every `docs/method.md §...` citation in `text`."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in CITING_LINE.finditer(line):
            found.extend((number, section) for section in SECTION.findall(match.group(1)))
    return found


def test_method_sections_are_numbered_and_unique():
    headings = HEADING.findall(METHOD.read_text(encoding="utf-8"))
    assert len(headings) == len(set(headings)), "a section number of docs/method.md appears twice"
    assert {"1", "3.1", "5.1", "6.5", "9.1"} <= set(headings)


def test_no_code_cites_the_reference_outside_the_repository():
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in code_files(("srdd_scale", "tools", "tests"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                 if OLD_REFERENCE in line]
    assert not offenders, f"cite docs/method.md sections instead of {OLD_REFERENCE}: {offenders}"


def test_every_method_citation_names_an_existing_section():
    sections = method_sections()
    cited = 0
    broken = []
    for path in cited_files():
        for number, section in citations(path.read_text(encoding="utf-8")):
            cited += 1
            if section not in sections:
                broken.append(f"{path.relative_to(ROOT)}:{number}: §{section}")
    assert not broken, f"citations of sections that docs/method.md does not have: {broken}"
    assert cited > 40  # the citations this test guards are really found


def test_citation_parser_reads_lists_and_ranges():
    line = "x (docs/method.md §6.5, §9.10) y §7 and docs/method.md §masks; docs/method.md §4.3-§4.5."
    assert [s for _, s in citations(line)] == ["6.5", "9.10", "7", "masks", "4.3", "4.5"]
    assert citations("no citation §2.1 here\n\ndocs/method.md §3") == [(3, "3")]
