"""docs/openapi.json and docs/wan-api.md follow the gateway's routes."""

from __future__ import annotations

import json
from pathlib import Path

from smgw_emu.app.openapi import ROUTE_DOCS, documented_router, generate, path_template, render
from smgw_emu.cli import main

DOCS = Path(__file__).resolve().parents[2] / "docs"
REGENERATE = "regenerate it: .venv/bin/smgw-emu api openapi --output docs/openapi.json"


def test_committed_openapi_document_is_the_generated_one():
    committed = json.loads((DOCS / "openapi.json").read_text(encoding="utf-8"))
    assert committed == generate(), f"docs/openapi.json is stale; {REGENERATE}"


def test_every_route_is_described_and_no_description_is_stale():
    names = [route.name for route in documented_router().routes]
    assert len(names) == len(set(names)), "route names must be unique (they are the operationIds)"
    missing = sorted(set(names) - set(ROUTE_DOCS))
    assert not missing, f"routes without an entry in smgw_emu.app.openapi.ROUTE_DOCS: {missing}"
    assert not sorted(set(ROUTE_DOCS) - set(names)), "ROUTE_DOCS describes routes that no longer exist"


def test_wan_api_md_names_every_resource():
    text = (DOCS / "wan-api.md").read_text(encoding="utf-8")
    for route in documented_router().routes:
        path, _ = path_template(route.pattern.pattern)
        assert f"{route.method} {path}" in text, f"docs/wan-api.md does not mention {route.method} {path}"


def test_cli_writes_the_document(tmp_path, capsys):
    target = tmp_path / "openapi.json"
    assert main(["api", "openapi", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render(generate())
    assert "written to" in capsys.readouterr().out
    assert main(["api", "openapi"]) == 0
    assert json.loads(capsys.readouterr().out)["openapi"] == "3.1.0"


def test_path_templates():
    assert path_template(r"/smgw/cosem/(?P<kind>[^/]+)/?\Z") == ("/smgw/cosem/{kind}", ["kind"])
    assert path_template(r"/smgw/auth\Z") == ("/smgw/auth", [])
