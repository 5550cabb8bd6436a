"""`make mutants`: plant known faults in the product code and check the tests catch each one.

Each mutant replaces one piece of text (which must occur exactly once) in one source file. The
tree (`git ls-files`, as in the working tree) is copied to a temporary directory and the tests run
there with PYTHONPATH at the copy's src/, so the working tree is never modified. Per mutant, only
the tests that must catch it run (`pytest -x -q`): "caught" when they fail, "survived" when they
pass. The same tests first run on the unmodified copy and must pass there.

Exit status 1 when a mutant survived, its target text is not found exactly once (the mutant is
stale: update it with the code), the baseline fails or pytest could not run the tests.
tests/unit/test_mutants.py checks the targets without running anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 600


@dataclass(frozen=True)
class Mutant:
    name: str
    claim: str          # what the catalogue claims and the fault breaks
    path: str           # source file, relative to the repository root
    target: str         # text replaced (exactly once in the file)
    replacement: str
    tests: tuple[str, ...]  # pytest ids that must catch it


WAN = "tests/e2e/test_wan_channels.py::"
CLS = "tests/e2e/test_cls.py::"
DATA = "tests/e2e/test_data_transfer.py::"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "no-retry", "fig. 2 GWA unreachable -> retries: the MANAGEMENT connect makes one attempt",
        "src/smgw_emu/app/gateway.py",
        "        attempts = 1 + ch.management_max_retries\n",
        "        attempts = 1\n",
        (WAN + "test_fig2_gwa_unreachable_gateway_retries_until_gwa_listens",
         WAN + "test_fig2_gwa_unreachable_retries_stop_at_the_bound"),
    ),
    Mutant(
        "cls-abort", "figs. 74-77 CLS legs end with TLS close_notify: the gateway drops the TCP connection instead",
        "src/smgw_emu/net/cls_proxy.py",
        '        """TLS close_notify, then FIN (asyncio flushes what is buffered first)."""\n'
        "        self.writer.close()\n",
        '        """TLS close_notify, then FIN (asyncio flushes what is buffered first)."""\n'
        "        self.writer.transport.abort()\n",
        (CLS + "test_fig74_hks3_cls_device_reaches_its_emt", CLS + "test_fig75_hks4_gwa_triggers_the_channel",
         CLS + "test_fig76_hks5_standing_channel_opened_by_the_gateway",
         CLS + "test_fig77_gwa_disconnects_a_running_connection"),
    ),
    Mutant(
        "taf6-zero", "figs. 51/52 TAF 6 readout sends the day's values: every TAF 6 day value is sent as 0",
        "src/smgw_emu/core/taf.py",
        "                    e.text = v.value\n",
        '                    e.text = "0" if data.kind == "taf6-day" else v.value\n',
        (DATA + "test_fig51_taf6_readout_process_chain", DATA + "test_fig52_taf6_readout_and_bad_days"),
    ),
)


def stale(mutant: Mutant, root: Path = ROOT) -> str | None:
    """Why the mutant cannot be applied to the tree at ``root`` (None: its target occurs once)."""
    path = root / mutant.path
    if not path.is_file():
        return f"{mutant.path} does not exist"
    count = path.read_text(encoding="utf-8").count(mutant.target)
    return None if count == 1 else f"target text occurs {count} times in {mutant.path} (must be once)"


def copy_tree(dest: Path) -> None:
    """The tracked files, with their working-tree content."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True).stdout
    for name in listed.decode("utf-8").split("\0"):
        if not name or not (ROOT / name).is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                cwd=tree, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - start, f"timed out after {TIMEOUT_S} s"
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return result.returncode, time.perf_counter() - start, lines[-1] if lines else result.stderr.strip()[-300:]


def imported_from(tree: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    return subprocess.run([sys.executable, "-c", "import smgw_emu; print(smgw_emu.__file__)"], cwd=tree, env=env,
                          check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    problems = [f"{m.name}: STALE: {why}" for m in MUTANTS if (why := stale(m))]
    if problems:
        print("\n".join(problems))
        return 1
    failed = False
    with tempfile.TemporaryDirectory(prefix="smgw-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        where = imported_from(tree)
        if not where.startswith(str(tree)):
            print(f"the copy imports smgw_emu from {where}, not from {tree}/src: cannot run mutants")
            return 1
        every = tuple(dict.fromkeys(t for m in MUTANTS for t in m.tests))
        code, seconds, summary = run_tests(tree, every)
        print(f"baseline   {'passed' if code == 0 else 'FAILED':8} {len(every)} tests ({summary}, {seconds:.1f} s)", flush=True)
        if code != 0:
            return 1
        for mutant in MUTANTS:
            path = tree / mutant.path
            original = path.read_text(encoding="utf-8")
            try:
                path.write_text(original.replace(mutant.target, mutant.replacement, 1), encoding="utf-8")
                code, seconds, summary = run_tests(tree, mutant.tests)
            finally:
                path.write_text(original, encoding="utf-8")
            verdict = {0: "survived", 1: "caught"}.get(code, "error")
            failed |= verdict != "caught"
            print(f"{mutant.name:10} {verdict:8} {mutant.claim}\n{'':19} {mutant.path}; "
                  f"{len(mutant.tests)} tests: {summary} (pytest exit {code}, {seconds:.1f} s)", flush=True)
    print("all mutants caught" if not failed else "NOT all mutants caught")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
