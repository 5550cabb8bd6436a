"""The folder layout is the architecture: a module's path says what it may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "smgw_emu"

# What each layer must never import (top-level module names and smgw_emu sub-packages).
FORBIDDEN = {
    "core": {"asyncio", "aiohttp", "socket", "ssl", "sqlite3", "h11", "selectors",
             "smgw_emu.net", "smgw_emu.app", "smgw_emu.store", "smgw_emu.reference", "smgw_emu.cli"},
    "catalogue": {"asyncio", "aiohttp", "socket", "sqlite3", "smgw_emu.net", "smgw_emu.app", "smgw_emu.store",
                  "smgw_emu.reference"},
    "store": {"asyncio", "aiohttp", "socket", "ssl", "smgw_emu.core", "smgw_emu.net", "smgw_emu.app",
              "smgw_emu.reference"},
    "pki": {"asyncio", "aiohttp", "socket", "sqlite3", "smgw_emu.net", "smgw_emu.app", "smgw_emu.store",
            "smgw_emu.reference"},
    "net": {"smgw_emu.app", "smgw_emu.reference", "smgw_emu.cli"},
    "reference": {"smgw_emu.app", "smgw_emu.store", "smgw_emu.cli"},
    "app": {"smgw_emu.reference", "smgw_emu.cli"},
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violates(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer):
    problems = []
    for path in sorted((SRC / layer).rglob("*.py")):
        for name in sorted(imports_of(path)):
            if violates(name, FORBIDDEN[layer]):
                problems.append(f"{path.relative_to(SRC.parent)} imports {name}")
    assert problems == [], "\n".join(problems)


def test_the_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom smgw_emu.net.tls import PeerCheck\n")
    assert {n for n in imports_of(bad) if violates(n, FORBIDDEN["core"])} == {"asyncio", "smgw_emu.net.tls"}
