"""The process catalogue (smgw_emu.catalogue): the packaged file, its validation, check()."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest

from smgw_emu.catalogue import FIGURES, Catalogue, CatalogueError, load

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the packaged catalogue ---------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged() -> Catalogue:
    return load()


def test_packaged_catalogue_has_one_entry_per_figure(packaged: Catalogue) -> None:
    assert [entry.figure for entry in packaged.entries] == list(range(1, 78))
    assert packaged.totals()["total"] == 77


def test_packaged_catalogue_references_exist(packaged: Catalogue) -> None:
    # Fails when an entry marked implemented names no test, or names a test or module that
    # does not exist.
    assert packaged.check(REPO_ROOT) == []


def test_packaged_kinds_follow_chapters(packaged: Catalogue) -> None:
    for entry in packaged.entries:
        expected = "subprocess" if entry.figure <= 16 else "process"
        assert entry.kind == expected, entry.figure
        assert entry.chapter.startswith("5." if entry.figure <= 16 else "6."), entry.figure


@pytest.mark.parametrize(
    ("figure", "chapter", "title"),
    [
        (1, "5.1", "Wake-Up-Paket versenden"),
        (5, "5.5", "ADMIN-SERVICE-Kanal abbauen"),
        (31, "6.4.2.7", "Crypto Reset mit bestehendem Pairing"),
        (32, "6.4.2.7", "Crypto Reset ohne bestehendes Pairing"),
        (51, "6.5.8.1", "Bedarfsauslesung TAF 6 EPK"),
        (52, "6.5.8.2", "Bedarfsauslesung TAF 6"),
        (59, "6.6.2", "GWA-Wechsel"),
        (66, "6.6.9", 'GWA-Wechsel Fehlerfall "Finale GWAPRE Profile verifizieren"'),
        (67, "6.6.10", 'GWA-Wechsel Fehlerfall "Finalen GWA verifizieren"'),
        (69, "6.7.2", "SMGw Schlüsselwechsel"),
        (74, "6.8.1.2", "CLS-Verbindungsaufbau HKS 3"),
        (76, "6.8.1.4", "CLS-Verbindungsaufbau HKS 5"),
        (77, "6.8.2", "CLS-Verbindung trennen durch GWA"),
    ],
)
def test_packaged_chapter_and_title(
    packaged: Catalogue, figure: int, chapter: str, title: str
) -> None:
    entry = packaged.entry(figure)
    assert (entry.chapter, entry.title) == (chapter, title)


def test_gwa_change_failure_figures_describe_a_rollback(packaged: Catalogue) -> None:
    for figure in range(61, 68):
        entry = packaged.entry(figure)
        assert entry.failures, figure
        assert any("rollback" in failure.response for failure in entry.failures), figure


def test_packaged_steps_follow_the_wire_conventions(packaged: Catalogue) -> None:
    gwas = {"GWA", "NEW_GWA"}
    for entry in packaged.entries:
        steps = entry.steps
        for index, step in enumerate(steps):
            if step.id.startswith("wakeup") and step.channel != "local":
                assert (step.receiver, step.channel) == ("SMGW", "wakeup"), entry.figure
                follow_up = steps[index + 1]
                assert follow_up.id.startswith("management-tls-connect"), entry.figure
                assert follow_up.receiver == step.sender, entry.figure
            if step.id.startswith("event-"):
                assert (step.sender, step.channel) == ("SMGW", "info-report"), entry.figure
                assert step.receiver in gwas, entry.figure
            if step.id.startswith("response-"):
                assert (step.sender, step.channel) == ("SMGW", "management"), entry.figure


def test_entry_lookup_of_unknown_figure_raises(packaged: Catalogue) -> None:
    with pytest.raises(KeyError, match="figure 78"):
        packaged.entry(78)


def test_json_list_is_serialisable_and_complete(packaged: Catalogue) -> None:
    items = json.loads(json.dumps(packaged.to_json_list()))
    assert len(items) == 77
    first = items[0]
    assert first["figure"] == 1
    for key in ("chapter", "title", "title_en", "status", "tests", "code", "steps", "failures"):
        assert key in first
    assert first["steps"][0] == {
        "id": "wakeup",
        "from": "GWA",
        "to": "SMGW",
        "message": packaged.entry(1).steps[0].message,
        "channel": "wakeup",
    }


def test_table_lists_every_figure_and_the_totals(packaged: Catalogue) -> None:
    lines = packaged.format_table().splitlines()
    assert len(lines) == 1 + 77 + 1  # header, one row per figure, totals
    assert lines[1].split()[:3] == ["1", "5.1", packaged.entry(1).status]
    totals = packaged.totals()
    assert lines[-1] == (
        f"implemented {totals['implemented']}/77, planned {totals['planned']}/77"
    )


# --- catalogue files written for the tests ------------------------------------------------


def minimal_entry(figure: int) -> dict[str, Any]:
    return {
        "figure": figure,
        "chapter": "5.1",
        "title": f"Bild {figure}",
        "title_en": f"Figure {figure}",
        "kind": "subprocess",
        "participants": ["GWA", "SMGW"],
        "status": "planned",
        "code": [],
        "tests": [],
        "source": "digest",
        "notes": "test entry",
        "steps": [
            {"id": "wakeup", "from": "GWA", "to": "SMGW", "message": "wake", "channel": "wakeup"},
            {
                "id": "management-tls-connect",
                "from": "SMGW",
                "to": "GWA",
                "message": "connect",
                "channel": "management",
            },
        ],
        "failures": [{"case": "bad packet", "response": "silence"}],
    }


def minimal_entries() -> list[dict[str, Any]]:
    return [minimal_entry(figure) for figure in FIGURES]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    raise TypeError(value)


def write_catalogue(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    blocks = [
        "[[process]]\n"
        + "".join(f'"{key}" = {toml_value(value)}\n' for key, value in entry.items())
        for entry in entries
    ]
    path = tmp_path / "processes.toml"
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def test_minimal_catalogue_loads(tmp_path: Path) -> None:
    # Control for the negative tests below: without the mutation, the file is valid.
    catalogue = load(write_catalogue(tmp_path, minimal_entries()))
    assert len(catalogue.entries) == 77
    assert catalogue.entry(5).step_ids() == ["wakeup", "management-tls-connect"]


Mutation = Callable[[list[dict[str, Any]]], None]


def set_field(figure: int, key: str, value: Any) -> Mutation:
    def mutate(entries: list[dict[str, Any]]) -> None:
        entries[figure - 1][key] = value

    return mutate


def delete_field(figure: int, key: str) -> Mutation:
    def mutate(entries: list[dict[str, Any]]) -> None:
        del entries[figure - 1][key]

    return mutate


def set_step_field(figure: int, index: int, key: str, value: Any) -> Mutation:
    def mutate(entries: list[dict[str, Any]]) -> None:
        entries[figure - 1]["steps"][index][key] = value

    return mutate


def append_entry(entry: dict[str, Any]) -> Mutation:
    return lambda entries: entries.append(entry)


def remove_figure(figure: int) -> Mutation:
    def mutate(entries: list[dict[str, Any]]) -> None:
        entries[:] = [entry for entry in entries if entry["figure"] != figure]

    return mutate


@pytest.mark.parametrize(
    ("mutation", "expected_message"),
    [
        pytest.param(
            delete_field(5, "title"),
            r"figure 5: missing field 'title'",
            id="missing-title",
        ),
        pytest.param(
            delete_field(5, "steps"),
            r"figure 5: missing field 'steps'",
            id="missing-steps",
        ),
        pytest.param(
            delete_field(5, "figure"),
            r"process #5: missing field 'figure'",
            id="missing-figure",
        ),
        pytest.param(
            set_field(5, "figure", "5"),
            r"process #5: field 'figure': expected an integer",
            id="figure-as-string",
        ),
        pytest.param(
            set_field(5, "figure", True),
            r"process #5: field 'figure': expected an integer",
            id="figure-as-bool",
        ),
        pytest.param(
            set_field(5, "chapter", 5),
            r"figure 5: field 'chapter': expected a string",
            id="chapter-as-int",
        ),
        pytest.param(
            set_field(5, "tests", "tests/unit/test_x.py"),
            r"figure 5: field 'tests': expected a list of strings",
            id="tests-as-string",
        ),
        pytest.param(
            set_field(5, "steps", ["wakeup"]),
            r"figure 5: field 'steps': expected a list of tables",
            id="steps-as-strings",
        ),
        pytest.param(
            set_field(5, "status", "done"),
            r"figure 5: field 'status': unknown value 'done'",
            id="unknown-status",
        ),
        pytest.param(
            set_field(5, "kind", "routine"),
            r"figure 5: field 'kind': unknown value 'routine'",
            id="unknown-kind",
        ),
        pytest.param(
            set_field(5, "test", []),
            r"figure 5: unknown field\(s\) \['test'\]",
            id="misspelt-field",
        ),
        pytest.param(
            set_field(5, "failures", []),
            r"figure 5: field 'failures': must not be empty",
            id="no-failures",
        ),
        pytest.param(
            set_field(5, "chapter", "chapter five"),
            r"figure 5: field 'chapter'",
            id="malformed-chapter",
        ),
        pytest.param(
            append_entry(minimal_entry(5)),
            r"figure 5: field 'figure': duplicate \(process #5 and #78\)",
            id="duplicate-figure",
        ),
        pytest.param(
            remove_figure(77),
            r"field 'figure': figures must be exactly 1\.\.77; missing 77",
            id="missing-figure-77",
        ),
        pytest.param(
            append_entry(minimal_entry(78)),
            r"figure 78: field 'figure': outside 1\.\.77",
            id="figure-78",
        ),
        pytest.param(
            set_field(5, "participants", ["GWA", "SMGW", "ALIEN"]),
            r"figure 5: field 'participants': unknown participant 'ALIEN'",
            id="unknown-participant",
        ),
        pytest.param(
            set_step_field(5, 0, "from", "METER"),
            r"figure 5: steps\[0\]: field 'from': 'METER' is not among the entry's participants",
            id="step-from-not-participant",
        ),
        pytest.param(
            set_step_field(5, 1, "to", "EMT"),
            r"figure 5: steps\[1\]: field 'to': 'EMT' is not among the entry's participants",
            id="step-to-not-participant",
        ),
        pytest.param(
            set_step_field(5, 0, "channel", "carrier-pigeon"),
            r"figure 5: steps\[0\]: field 'channel': unknown value",
            id="unknown-channel",
        ),
        pytest.param(
            set_step_field(5, 0, "id", "Wake Up"),
            r"figure 5: steps\[0\]: field 'id': 'Wake Up' is not kebab-case",
            id="step-id-not-kebab",
        ),
    ],
)
def test_invalid_catalogue_is_rejected(
    tmp_path: Path, mutation: Mutation, expected_message: str
) -> None:
    entries = minimal_entries()
    mutation(entries)
    path = write_catalogue(tmp_path, entries)
    with pytest.raises(CatalogueError, match=expected_message):
        load(path)


def test_invalid_toml_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "processes.toml"
    path.write_text("[[process]\nfigure = 1\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="not valid TOML"):
        load(path)


# --- check() against a repository ---------------------------------------------------------

SAMPLE_TEST_FILE = textwrap.dedent(
    """\
    import pytest

    def test_plain():
        pass

    async def test_async():
        pass

    @pytest.mark.parametrize("value", [1, 2])
    def test_param(value):
        pass

    class TestGroup:
        def test_method(self):
            pass

        class TestInner:
            async def test_deep(self):
                pass

    def helper():
        def test_nested_in_function():
            pass
    """
)
SAMPLE = "tests/unit/test_sample.py"


@pytest.fixture
def repo_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "tests" / "unit").mkdir(parents=True)
    (root / SAMPLE).write_text(SAMPLE_TEST_FILE, encoding="utf-8")
    return root


def catalogue_with(
    tmp_path: Path, *, status: str = "implemented", tests: list[str], code: tuple[str, ...] = ()
) -> Catalogue:
    """The minimal catalogue with figure 1's status, tests and code replaced."""
    entries = minimal_entries()
    entries[0].update(status=status, tests=tests, code=list(code))
    return load(write_catalogue(tmp_path, entries))


def load_and_check(tmp_path: Path, repo_root: Path, **fields: Any) -> list[str]:
    return catalogue_with(tmp_path, **fields).check(repo_root)


def test_check_accepts_existing_references(tmp_path: Path, repo_root: Path) -> None:
    catalogue = catalogue_with(
        tmp_path,
        tests=[
            SAMPLE,
            f"{SAMPLE}::test_plain",
            f"{SAMPLE}::test_async",
            f"{SAMPLE}::test_param[1]",
            f"{SAMPLE}::test_param[a::b]",
            f"{SAMPLE}::TestGroup::test_method",
            f"{SAMPLE}::TestGroup::TestInner::test_deep",
        ],
        code=("smgw_emu.catalogue", "json"),
    )
    assert catalogue.check(repo_root) == []


@pytest.mark.parametrize(
    ("node_id", "expected_problem"),
    [
        (
            "tests/unit/test_absent.py::test_plain",
            "file 'tests/unit/test_absent.py' does not exist",
        ),
        (f"{SAMPLE}::test_absent", "'test_absent' is not defined"),
        (f"{SAMPLE}::test_absent[1]", "'test_absent' is not defined"),
        (f"{SAMPLE}::test_method", "'test_method' is not defined"),
        (f"{SAMPLE}::TestGroup::test_absent", "'TestGroup::test_absent' is not defined"),
        (f"{SAMPLE}::TestAbsent::test_method", "'TestAbsent::test_method' is not defined"),
        (f"{SAMPLE}::test_nested_in_function", "'test_nested_in_function' is not defined"),
    ],
)
def test_check_reports_a_missing_test(
    tmp_path: Path, repo_root: Path, node_id: str, expected_problem: str
) -> None:
    problems = load_and_check(tmp_path, repo_root, tests=[f"{SAMPLE}::test_plain", node_id])
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"figure 1: tests: '{node_id}'")
    assert expected_problem in problems[0]


def test_check_reports_missing_tests_of_planned_entries_too(
    tmp_path: Path, repo_root: Path
) -> None:
    problems = load_and_check(
        tmp_path, repo_root, status="planned", tests=[f"{SAMPLE}::test_gone"]
    )
    assert len(problems) == 1 and "'test_gone' is not defined" in problems[0]


def test_check_reports_implemented_without_tests(tmp_path: Path, repo_root: Path) -> None:
    problems = load_and_check(tmp_path, repo_root, tests=[])
    assert problems == ["figure 1: status is 'implemented' but 'tests' is empty"]


def test_check_accepts_planned_without_tests(tmp_path: Path, repo_root: Path) -> None:
    assert load_and_check(tmp_path, repo_root, status="planned", tests=[]) == []


def test_check_reports_unparsable_test_file(tmp_path: Path, repo_root: Path) -> None:
    (repo_root / "tests" / "unit" / "test_broken.py").write_text("def test_x(:\n")
    problems = load_and_check(tmp_path, repo_root, tests=["tests/unit/test_broken.py::test_x"])
    assert len(problems) == 1 and "cannot parse test_broken.py" in problems[0]


@pytest.mark.parametrize(
    ("module", "expected_problem"),
    [
        ("smgw_emu.catalogue.no_such_module", "module not found"),
        ("no_such_package_for_catalogue_check.module", "a parent package does not exist"),
    ],
)
def test_check_reports_unresolvable_code_module(
    tmp_path: Path, repo_root: Path, module: str, expected_problem: str
) -> None:
    problems = load_and_check(
        tmp_path, repo_root, tests=[f"{SAMPLE}::test_plain"], code=("smgw_emu.catalogue", module)
    )
    assert problems == [f"figure 1: code: '{module}': {expected_problem}"]


def test_totals_and_table_count_implemented_entries(tmp_path: Path, repo_root: Path) -> None:
    catalogue = catalogue_with(tmp_path, tests=[f"{SAMPLE}::test_plain"])
    assert catalogue.totals() == {"implemented": 1, "planned": 76, "total": 77}
    table = catalogue.format_table().splitlines()
    assert re.split(r"\s{2,}", table[1]) == ["1", "5.1", "implemented", "Figure 1", "1"]
    assert table[-1] == "implemented 1/77, planned 76/77"
