"""Machine-readable catalogue of the processes of the FNN "Lastenheft Mikroprozesse" v1.1.1.

``processes.toml`` beside this module holds one entry per figure (Bild 1..77): chapter, titles,
participants, the ordered wire-level steps, failure cases, and the implementation status with the
code modules and tests that back it. ``load()`` reads and validates it; ``Catalogue.check()``
cross-checks the entries against a repository checkout (named tests and modules must exist).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

__all__ = [
    "CHANNELS",
    "FIGURES",
    "KINDS",
    "PARTICIPANTS",
    "STATUSES",
    "Catalogue",
    "CatalogueError",
    "FailureCase",
    "ProcessEntry",
    "Step",
    "load",
]

CATALOGUE_FILE_NAME = "processes.toml"

FIGURES = range(1, 78)
PARTICIPANTS = frozenset(
    {"GWA", "SMGW", "EMT", "METER", "CLS", "CONSUMER", "SERVICE_TECHNICIAN", "NEW_GWA"}
)
# "emt" is the gateway's own WAN connection to an external market participant (data
# transfer, CLS proxy); the other channels are those of Lastenheft chapter 5 plus the local
# networks and "local" for steps inside the gateway.
CHANNELS = frozenset(
    {"wakeup", "management", "admin-service", "info-report", "emt", "lmn", "han", "local"}
)
STATUSES = ("implemented", "planned")
KINDS = frozenset({"subprocess", "process"})

_PROCESS_FIELDS = (
    "figure", "chapter", "title", "title_en", "kind", "participants", "status",
    "code", "tests", "source", "notes", "steps", "failures",
)
_STEP_FIELDS = ("id", "from", "to", "message", "channel")
_FAILURE_FIELDS = ("case", "response")
_CHAPTER_PATTERN = re.compile(r"\d+(\.\d+)*")
_STEP_ID_PATTERN = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class CatalogueError(ValueError):
    """The catalogue file is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class Step:
    """One wire-level message (or one observable action inside the gateway)."""

    id: str
    sender: str
    receiver: str
    message: str
    channel: str

    def to_dict(self) -> dict[str, str]:
        # Same keys as in processes.toml, so JSON consumers see the file's vocabulary.
        return {
            "id": self.id,
            "from": self.sender,
            "to": self.receiver,
            "message": self.message,
            "channel": self.channel,
        }


@dataclass(frozen=True)
class FailureCase:
    case: str
    response: str

    def to_dict(self) -> dict[str, str]:
        return {"case": self.case, "response": self.response}


@dataclass(frozen=True)
class ProcessEntry:
    figure: int
    chapter: str
    title: str
    title_en: str
    kind: str
    participants: tuple[str, ...]
    steps: tuple[Step, ...]
    failures: tuple[FailureCase, ...]
    status: str
    code: tuple[str, ...]
    tests: tuple[str, ...]
    notes: str
    source: str

    def step_ids(self) -> list[str]:
        """The step ids in order: what an end-to-end transcript of this process must equal."""
        return [step.id for step in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "chapter": self.chapter,
            "title": self.title,
            "title_en": self.title_en,
            "kind": self.kind,
            "participants": list(self.participants),
            "status": self.status,
            "code": list(self.code),
            "tests": list(self.tests),
            "source": self.source,
            "notes": self.notes,
            "steps": [step.to_dict() for step in self.steps],
            "failures": [failure.to_dict() for failure in self.failures],
        }


class Catalogue:
    """All process entries, sorted by figure number."""

    def __init__(self, entries: Iterable[ProcessEntry]):
        self.entries: tuple[ProcessEntry, ...] = tuple(sorted(entries, key=lambda e: e.figure))
        self._by_figure = {entry.figure: entry for entry in self.entries}

    def entry(self, figure: int) -> ProcessEntry:
        try:
            return self._by_figure[figure]
        except KeyError:
            raise KeyError(f"no catalogue entry for figure {figure}") from None

    def totals(self) -> dict[str, int]:
        implemented = sum(1 for entry in self.entries if entry.status == "implemented")
        return {
            "implemented": implemented,
            "planned": len(self.entries) - implemented,
            "total": len(self.entries),
        }

    def to_json_list(self) -> list[dict[str, Any]]:
        return [entry.to_dict() for entry in self.entries]

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_json_list(), indent=indent, ensure_ascii=False)

    def format_table(self) -> str:
        headers = ("fig", "chapter", "status", "title", "tests")
        rows = [
            (str(e.figure), e.chapter, e.status, e.title_en, str(len(e.tests)))
            for e in self.entries
        ]
        widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
            for row in [headers, *rows]
        ]
        totals = self.totals()
        lines.append(
            f"implemented {totals['implemented']}/{totals['total']}, "
            f"planned {totals['planned']}/{totals['total']}"
        )
        return "\n".join(lines)

    def check(self, repo_root: str | os.PathLike[str]) -> list[str]:
        """Problems with the entries' references into the repository at repo_root.

        Reports: an implemented entry without tests; a test node id whose file is missing, or
        whose function / Class::method is not defined there; a code module that does not
        resolve. Modules are located with importlib.util.find_spec (parent packages get
        imported, the module itself does not).
        """
        root = Path(repo_root)
        test_files = _TestFileIndex(root)
        problems: list[str] = []
        for entry in self.entries:
            label = f"figure {entry.figure}"
            if entry.status == "implemented" and not entry.tests:
                problems.append(f"{label}: status is 'implemented' but 'tests' is empty")
            for node_id in entry.tests:
                problem = test_files.problem_with(node_id)
                if problem:
                    problems.append(f"{label}: tests: '{node_id}': {problem}")
            for module in entry.code:
                problem = _module_problem(module)
                if problem:
                    problems.append(f"{label}: code: '{module}': {problem}")
        return problems


def load(path: str | os.PathLike[str] | None = None) -> Catalogue:
    """Read and validate a catalogue file; by default the packaged processes.toml."""
    if path is None:
        resource = resources.files(__name__).joinpath(CATALOGUE_FILE_NAME)
        text = resource.read_text(encoding="utf-8")
        origin = CATALOGUE_FILE_NAME
    else:
        text = Path(path).read_text(encoding="utf-8")
        origin = str(path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{origin}: not valid TOML: {exc}") from exc
    return Catalogue(_parse_document(document, origin))


# --- validation ---------------------------------------------------------------------------


def _parse_document(document: dict[str, Any], origin: str) -> list[ProcessEntry]:
    unknown = sorted(set(document) - {"process"})
    if unknown:
        raise CatalogueError(f"{origin}: unknown top-level key(s) {unknown}; expected [[process]]")
    tables = document.get("process")
    if not isinstance(tables, list) or not tables:
        raise CatalogueError(f"{origin}: no [[process]] entries")

    entries: list[ProcessEntry] = []
    position_of_figure: dict[int, int] = {}
    for position, table in enumerate(tables, start=1):
        entry = _parse_entry(table, f"{origin}: process #{position}")
        if entry.figure in position_of_figure:
            raise CatalogueError(
                f"{origin}: figure {entry.figure}: field 'figure': duplicate "
                f"(process #{position_of_figure[entry.figure]} and #{position})"
            )
        position_of_figure[entry.figure] = position
        entries.append(entry)

    missing = [figure for figure in FIGURES if figure not in position_of_figure]
    if missing:
        raise CatalogueError(
            f"{origin}: field 'figure': figures must be exactly "
            f"{FIGURES.start}..{FIGURES.stop - 1}; missing {_compact(missing)}"
        )
    return entries


def _parse_entry(table: Any, position_label: str) -> ProcessEntry:
    if not isinstance(table, dict):
        raise CatalogueError(f"{position_label}: expected a table")
    # Until the figure is known, errors name the entry's position in the file.
    figure = _Fields(table, position_label).integer("figure")
    if figure not in FIGURES:
        raise CatalogueError(
            f"{position_label}: figure {figure}: field 'figure': outside "
            f"{FIGURES.start}..{FIGURES.stop - 1}"
        )
    label = f"{position_label}: figure {figure}"
    fields = _Fields(table, label)
    fields.reject_unknown(_PROCESS_FIELDS)

    chapter = fields.string("chapter")
    if not _CHAPTER_PATTERN.fullmatch(chapter):
        raise CatalogueError(f"{label}: field 'chapter': {chapter!r} is not like '6.4.1.2'")
    kind = fields.choice("kind", KINDS)
    status = fields.choice("status", STATUSES)

    participants = fields.string_list("participants")
    for participant in participants:
        if participant not in PARTICIPANTS:
            raise CatalogueError(
                f"{label}: field 'participants': unknown participant {participant!r}; "
                f"known: {sorted(PARTICIPANTS)}"
            )

    steps = tuple(
        _parse_step(step_table, f"{label}: steps[{index}]", participants)
        for index, step_table in enumerate(fields.table_list("steps"))
    )
    # Step ids may repeat: a sequence can hold two "response-200" steps, as the wire does.

    failures = tuple(
        FailureCase(**{key: failure.string(key) for key in _FAILURE_FIELDS})
        for failure in (
            _Fields(failure_table, f"{label}: failures[{index}]")
            for index, failure_table in enumerate(fields.table_list("failures"))
        )
    )

    return ProcessEntry(
        figure=figure,
        chapter=chapter,
        title=fields.string("title"),
        title_en=fields.string("title_en"),
        kind=kind,
        participants=participants,
        steps=steps,
        failures=failures,
        status=status,
        code=fields.string_list("code", allow_empty=True),
        tests=fields.string_list("tests", allow_empty=True),
        notes=fields.string("notes"),
        source=fields.string("source"),
    )


def _parse_step(table: Any, label: str, participants: tuple[str, ...]) -> Step:
    fields = _Fields(table, label)
    fields.reject_unknown(_STEP_FIELDS)
    step_id = fields.string("id")
    if not _STEP_ID_PATTERN.fullmatch(step_id):
        raise CatalogueError(f"{label}: field 'id': {step_id!r} is not kebab-case")
    for key in ("from", "to"):
        actor = fields.string(key)
        if actor not in participants:
            raise CatalogueError(
                f"{label}: field '{key}': {actor!r} is not among the entry's participants "
                f"{list(participants)}"
            )
    return Step(
        id=step_id,
        sender=fields.string("from"),
        receiver=fields.string("to"),
        message=fields.string("message"),
        channel=fields.choice("channel", CHANNELS),
    )


class _Fields:
    """Typed access to one TOML table; every error names the table and the field."""

    def __init__(self, table: Any, label: str):
        if not isinstance(table, dict):
            raise CatalogueError(f"{label}: expected a table, got {type(table).__name__}")
        self._table = table
        self._label = label

    def reject_unknown(self, known: Iterable[str]) -> None:
        unknown = sorted(set(self._table) - set(known))
        if unknown:
            raise CatalogueError(f"{self._label}: unknown field(s) {unknown}")

    def _get(self, key: str) -> Any:
        if key not in self._table:
            raise CatalogueError(f"{self._label}: missing field '{key}'")
        return self._table[key]

    def _wrong_type(self, key: str, expected: str, value: Any) -> CatalogueError:
        return CatalogueError(
            f"{self._label}: field '{key}': expected {expected}, got {type(value).__name__}"
        )

    def integer(self, key: str) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong_type(key, "an integer", value)
        return value

    def string(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._wrong_type(key, "a string", value)
        if not value.strip():
            raise CatalogueError(f"{self._label}: field '{key}': empty string")
        return value

    def choice(self, key: str, allowed: Iterable[str]) -> str:
        value = self.string(key)
        if value not in allowed:
            raise CatalogueError(
                f"{self._label}: field '{key}': unknown value {value!r}; "
                f"allowed: {sorted(allowed)}"
            )
        return value

    def string_list(self, key: str, allow_empty: bool = False) -> tuple[str, ...]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self._wrong_type(key, "a list of strings", value)
        if not value and not allow_empty:
            raise CatalogueError(f"{self._label}: field '{key}': must not be empty")
        return tuple(value)

    def table_list(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self._wrong_type(key, "a list of tables", value)
        if not value:
            raise CatalogueError(f"{self._label}: field '{key}': must not be empty")
        return value


def _compact(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7', so a message about missing figures stays short."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


# --- repository cross-checks --------------------------------------------------------------


class _TestFileIndex:
    """Test names defined in the repository's test files, parsed once per file."""

    def __init__(self, root: Path):
        self._root = root
        self._names_by_path: dict[Path, set[str] | str] = {}

    def problem_with(self, node_id: str) -> str | None:
        file_part, _, name_part = node_id.partition("::")
        path = self._root / file_part
        if not file_part or not path.is_file():
            return f"file {file_part!r} does not exist"
        if not name_part:
            return None  # a whole file is a valid pytest node id
        # Parametrization ids may contain "::" themselves, so cut at the first bracket.
        qualified_name = name_part.split("[", 1)[0]
        names = self._names_in(path)
        if isinstance(names, str):
            return names
        if qualified_name not in names:
            return f"{qualified_name!r} is not defined in {file_part}"
        return None

    def _names_in(self, path: Path) -> set[str] | str:
        if path not in self._names_by_path:
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            except (SyntaxError, UnicodeDecodeError) as exc:
                self._names_by_path[path] = f"cannot parse {path.name}: {exc}"
            else:
                self._names_by_path[path] = set(_defined_test_names(tree.body, prefix=""))
        return self._names_by_path[path]


def _defined_test_names(body: list[ast.stmt], prefix: str) -> Iterable[str]:
    """Functions and classes at module level and inside classes, as pytest names them."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name
        elif isinstance(node, ast.ClassDef):
            yield prefix + node.name
            yield from _defined_test_names(node.body, prefix=f"{prefix}{node.name}::")


def _module_problem(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return "a parent package does not exist"
    except Exception as exc:  # a parent package fails to import, or the name is malformed
        return f"cannot be resolved: {type(exc).__name__}: {exc}"
    if spec is None:
        return "module not found"
    return None
