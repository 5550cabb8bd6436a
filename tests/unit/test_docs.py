"""The documentation stays true to the repository and to the code.

* The repository stands alone: no file in docs/, src/, tests/, bench/ or README.md points at a
  folder beside the checkout or at a path of one developer's machine.
* The "Known sections" line of docs/configuration.md is the loader's own list of sections.
* Every command of the argparse parser is in README's command table (and the table names no
  command the parser lacks).

The documented error outputs of `smgw-emu config check` are run in
tests/integration/test_docs_cli.py.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from smgw_emu import cli
from smgw_emu.app import config

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("docs", "src", "tests", "bench", "README.md")
SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".venv"}
SKIPPED_SUFFIXES = {".pyc", ".pyo", ".sqlite3", ".der", ".png"}

# Written in pieces so that this file does not match itself.
_SEP = "/"
FORBIDDEN = re.compile("|".join((
    re.escape(".." + _SEP + "shared"),          # the team's folder beside the checkout
    re.escape("shared" + _SEP + "spec") + r"\b",
    r"(?<![\w.-])" + _SEP + r"(?:work|root|home|Users)" + _SEP,  # one machine's absolute paths
)))


def outside_references(paths: list[Path]) -> list[str]:
    """`file:line: text` for every line under `paths` (files or directories) that refers to a
    folder outside the repository or to a machine-specific absolute path."""
    found = []
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            if SKIPPED_DIRS & set(path.parts) or path.suffix in SKIPPED_SUFFIXES:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if FORBIDDEN.search(line):
                    found.append(f"{path}:{number}: {line.strip()}")
    return found


def test_the_repository_refers_to_nothing_outside_it():
    assert outside_references([ROOT / name for name in SCANNED]) == []


@pytest.mark.parametrize("line", [
    "see .." + _SEP + "shared" + _SEP + "spec" + _SEP + "DOMAIN.md",
    "copied from `shared" + _SEP + "spec" + _SEP + "trudi-xsd/`",
    "the digest in shared" + _SEP + "spec",
    "notes = \"tried on " + _SEP + "work" + _SEP + "main\"",
    "cd " + _SEP + "root" + _SEP + "smgw",
    "HOME=" + _SEP + "home" + _SEP + "dev",
    _SEP + "Users" + _SEP + "dev" + _SEP + "x.pem",
])
def test_the_scanner_finds_each_kind_of_reference(tmp_path, line):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "note.md").write_text("harmless\n" + line + "\n", encoding="utf-8")
    assert outside_references([tmp_path]) == [f"{tmp_path / 'sub' / 'note.md'}:2: {line.strip()}"]


@pytest.mark.parametrize("line", [
    "smgw-emu pki init " + _SEP + "tmp" + _SEP + "pki",     # a temporary directory in an example
    "WORKDIR " + _SEP + "opt" + _SEP + "smgw-emu",
    "the shared kv counter; no code shared with the gateway",
    "src" + _SEP + "smgw_emu" + _SEP + "work" + _SEP + "x.py",  # a relative path is no machine's path
    "https://example.org" + _SEP + "home" + _SEP + "index.html",
])
def test_the_scanner_leaves_ordinary_text_alone(tmp_path, line):
    (tmp_path / "ok.md").write_text(line + "\n", encoding="utf-8")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe" + (".." + _SEP + "shared").encode() + b"\x80")
    assert outside_references([tmp_path]) == []


# -- docs/configuration.md ------------------------------------------------------------------------

def known_sections_line(text: str) -> list[str]:
    """The section names of the sentence "Known sections are `a`, `b` and `c`." (it may wrap)."""
    sentences = re.findall(r"Known sections are (.*?)\.(?:\s|$)", text, re.S)
    assert len(sentences) == 1, "docs/configuration.md must have one 'Known sections are ...' sentence"
    return re.findall(r"`([a-z_]+)`", sentences[0])


def test_the_known_sections_line_is_the_loaders_list():
    documented = known_sections_line((ROOT / "docs" / "configuration.md").read_text(encoding="utf-8"))
    assert len(documented) == len(set(documented)), documented
    assert set(documented) == set(config._SECTIONS)


def test_the_known_sections_check_sees_a_missing_section():
    line = "- Known sections are `gateway`, `gwa` and `clock`. An unknown section is an error."
    assert known_sections_line(line) == ["gateway", "gwa", "clock"]
    assert set(known_sections_line(line)) != set(config._SECTIONS)


# -- README's command table ------------------------------------------------------------------------

def parser_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command of an argparse parser, as a tuple of words (("config", "check"), ...)."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [prefix]
    commands = []
    for action in subparsers:
        for name, child in action.choices.items():
            commands += parser_commands(child, prefix + (name,))
    return commands


def readme_command_cells(text: str) -> list[str]:
    """The first cell of each row of README's command table, code marks removed, `\\|` kept as `|`."""
    section = text.split("## The command line", 1)[1].split("\n## ", 1)[0]
    cells = []
    for line in section.splitlines():
        if line.startswith("| `smgw-emu"):
            first = re.split(r"(?<!\\)\|", line)[1]
            cells.append(first.replace("\\|", "|").replace("`", "").strip())
    return cells


def documented(command: tuple[str, ...], cells: list[str]) -> bool:
    """A command is documented when a cell writes `smgw-emu <word> <word>...`, each word possibly
    one of an `a|b|c` alternation."""
    for cell in cells:
        for usage in re.findall(r"smgw-emu(?: [^ /]+)+", cell):
            words = usage.split()[1:]
            if len(words) >= len(command) and all(
                    word in alternatives.split("|") for word, alternatives in zip(command, words)):
                return True
    return False


def test_every_cli_command_is_in_the_readme_table():
    cells = readme_command_cells((ROOT / "README.md").read_text(encoding="utf-8"))
    commands = parser_commands(cli.build_parser())
    assert ("config", "default") in commands and ("gwa", "serve") in commands  # the walk goes deep
    assert [" ".join(c) for c in commands if not documented(c, cells)] == []


def test_the_readme_table_names_no_command_the_parser_lacks():
    cells = readme_command_cells((ROOT / "README.md").read_text(encoding="utf-8"))
    top = {c[0] for c in parser_commands(cli.build_parser())}
    named = {usage.split()[1] for cell in cells for usage in re.findall(r"smgw-emu [^ /]+", cell)}
    assert named - top == set()


def test_the_command_check_sees_a_missing_row():
    cells = readme_command_cells("## The command line\n\n| command | what |\n| --- | --- |\n"
                                 "| `smgw-emu gwa demo\\|serve` | the reference GWA |\n"
                                 "| `smgw-emu config check FILE` | validate |\n\n## Next\n")
    assert documented(("gwa", "serve"), cells) and documented(("config", "check"), cells)
    assert not documented(("gwa", "request"), cells)
    assert not documented(("config", "default"), cells)
    assert not documented(("api", "openapi"), cells)


# -- docs/domain.md ---------------------------------------------------------------------------------

DOMAIN_SECTIONS = ["Actors and interfaces", "Channels (incl. TLS profile)", "Wake-up packet",
                   "Object model and addressing", "Profiles", "Process catalogue", "HAN consumer view",
                   "Implementation notes"]


def test_domain_md_keeps_the_section_numbers_the_code_cites():
    text = (ROOT / "docs" / "domain.md").read_text(encoding="utf-8")
    assert re.findall(r"^## (\d+)\. (.+)$", text, re.M) == [(str(n), t) for n, t in enumerate(DOMAIN_SECTIONS, 1)]
    cited = set()
    for top in SCANNED:
        for path in ([ROOT / top] if (ROOT / top).is_file() else (ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in {".md", ".py", ".toml", ".json"}:
                cited |= {int(n) for n in re.findall(r"domain\.md(?: §| section )(\d+)", path.read_text("utf-8"))}
    assert cited and cited <= set(range(1, len(DOMAIN_SECTIONS) + 1))


def decision_names(domain: str) -> list[str]:
    """The decisions.md entries docs/domain.md names: quoted names inside `[ours: ...]` marks and
    in the last column of its process table."""
    names = []
    for mark in re.findall(r"\[ours: ([^\]]+)\]", domain):
        names += re.findall(r'"([^"]+)"', mark)
    for row in re.findall(r"^\| [0-9.-]+ \|.*\|(.*)\|$", domain, re.M):
        names += re.findall(r'"([^"]+)"', row)
    return [" ".join(name.split()) for name in names]  # a name may wrap across lines


def missing_decisions(domain: str, decisions: str) -> list[str]:
    headings = re.findall(r"^#{2,3} (.+)$", decisions, re.M)
    return [name for name in decision_names(domain) if not any(h.startswith(name) for h in headings)]


def test_every_decision_domain_md_names_exists():
    domain = (ROOT / "docs" / "domain.md").read_text(encoding="utf-8")
    decisions = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    assert len(decision_names(domain)) > 40
    assert missing_decisions(domain, decisions) == []


def test_the_decision_check_sees_a_missing_entry():
    domain = ('A rule. [ours: "Wake-up packet format", "No such\nentry"]\n\n'
              '| 6.1 | 17-19 | firmware | "Firmware update", "Gone" |\n')
    decisions = "## Firmware update (6.1)\n\n### Wake-up packet format\n"
    assert missing_decisions(domain, decisions) == ["No such entry", "Gone"]
