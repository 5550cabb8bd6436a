"""bench/mutants.py stays applicable: each planted fault's target text occurs exactly once in its
file, and each test that must catch it exists (the mutants are not run here: `make mutants`)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_mutants():
    spec = importlib.util.spec_from_file_location("bench_mutants", ROOT / "bench" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


MODULE = load_mutants()


def test_the_required_mutants_are_there():
    assert {"no-retry", "cls-abort", "taf6-zero"} <= {m.name for m in MODULE.MUTANTS}
    assert len({m.name for m in MODULE.MUTANTS}) == len(MODULE.MUTANTS)


@pytest.mark.parametrize("mutant", MODULE.MUTANTS, ids=lambda m: m.name)
def test_target_occurs_exactly_once(mutant):
    assert MODULE.stale(mutant, ROOT) is None
    assert mutant.target != mutant.replacement


@pytest.mark.parametrize("mutant", MODULE.MUTANTS, ids=lambda m: m.name)
def test_catching_tests_exist(mutant):
    assert mutant.tests
    for test_id in mutant.tests:
        path, _, name = test_id.partition("::")
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^(async )?def {re.escape(name)}\(", source, re.M), test_id


def test_stale_target_is_reported(tmp_path):
    mutant = MODULE.MUTANTS[0]
    copy = tmp_path / mutant.path
    copy.parent.mkdir(parents=True)
    copy.write_text("refactored away\n", encoding="utf-8")
    assert "occurs 0 times" in MODULE.stale(mutant, tmp_path)
    copy.write_text(mutant.target * 2, encoding="utf-8")
    assert "occurs 2 times" in MODULE.stale(mutant, tmp_path)
    assert "does not exist" in MODULE.stale(MODULE.MUTANTS[1], tmp_path)
