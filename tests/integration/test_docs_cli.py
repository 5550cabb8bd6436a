"""The error outputs docs/configuration.md shows are what `smgw-emu config check` prints.

The "Error messages" section of docs/configuration.md holds its examples in a form this test reads:

* a ```toml block whose first line is `# NAME` is the file NAME; one whose first line is
  `# NAME: minimal.toml plus` is minimal.toml followed by the block;
* a ```console block holds `$ smgw-emu config check NAME` lines, each followed by the exact output.

Every file is written into one empty directory, every command runs there as a subprocess, and
its output and exit status (0 for "valid", else 2) must be the documented ones.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "smgw_emu.cli"]
BLOCK = re.compile(r"^```(toml|console)\n(.*?)^```$", re.M | re.S)
PLUS = ": minimal.toml plus"


def examples(markdown: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The files and the (command, expected output) pairs of the "Error messages" section."""
    section = markdown.split("\n## Error messages\n", 1)[1].split("\n## ", 1)[0]
    files: dict[str, str] = {}
    runs: list[tuple[str, str]] = []
    for kind, body in BLOCK.findall(section):
        if kind == "toml":
            first = body.splitlines()[0]
            assert first.startswith("# "), f"a toml example must start with '# NAME': {first!r}"
            name = first[2:].strip()
            if name.endswith(PLUS):
                name = name[: -len(PLUS)]
                body = files["minimal.toml"] + "\n" + body
            files[name] = body
            continue
        command = None
        for line in body.splitlines():
            if line.startswith("$ "):
                command = line[2:]
                runs.append((command, ""))
            else:
                assert command is not None, f"output before a command: {line!r}"
                runs[-1] = (command, (runs[-1][1] + "\n" + line).strip("\n"))
    return files, runs


def run_examples(markdown: str, directory: Path) -> list[str]:
    """Every mismatch between a documented and a real output, as text (empty: all match)."""
    files, runs = examples(markdown)
    for name, body in files.items():
        (directory / name).write_text(body, encoding="utf-8")
    problems = []
    for command, expected in runs:
        words = command.split()
        assert words[:3] == ["smgw-emu", "config", "check"] and len(words) == 4, command
        result = subprocess.run([*CLI, *words[1:]], capture_output=True, text=True, cwd=directory, timeout=60)
        output = (result.stdout + result.stderr).strip()
        status = 0 if expected.endswith(")") and ": valid (" in expected else 2
        if output != expected or result.returncode != status:
            problems.append(f"$ {command}\n  documented: {expected}\n  real ({result.returncode}): {output}")
    return problems


def test_the_documented_config_errors_are_the_real_ones(tmp_path):
    markdown = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    files, runs = examples(markdown)
    assert "minimal.toml" in files and len(runs) >= 10
    assert run_examples(markdown, tmp_path) == []


@pytest.mark.parametrize("wrong", [
    "smgw-emu: invalid configuration: lmn: unknown section (known: gateway, gwa, clock, wakeup, channels, tls, store, policy)",
    "smgw-emu: invalid configuration: wakeup.window: unknown field",
])
def test_a_stale_example_is_found(tmp_path, wrong):
    markdown = ("# Doc\n\n## Error messages\n\n```toml\n# minimal.toml\n[gateway]\nid = \"x\"\n```\n\n"
                "```toml\n# typo.toml: minimal.toml plus\n[lmn]\nattempts = 3\n[wakeup]\nwindow = 60\n```\n\n"
                f"```console\n$ smgw-emu config check typo.toml\n{wrong}\n```\n\n## Next\n")
    problems = run_examples(markdown, tmp_path)
    assert len(problems) == 1 and "documented: " + wrong in problems[0]
