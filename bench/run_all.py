"""`make bench`: run every benchmark in bench/ in turn; each prints its own figures and ratios.

The crash campaign (bench/crash_campaign.py) is `make soak`, not part of this.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["bench_wan.py", "bench_cosem.py", "bench_cms.py"]


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        path = HERE / name
        if not path.exists():
            print(f"-- {name}: missing, skipped")
            continue
        print(f"\n-- {name}", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(path)])
        print(f"-- {name}: {'ok' if result.returncode == 0 else 'FAILED'} in {time.perf_counter() - start:.1f} s", flush=True)
        if result.returncode:
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
