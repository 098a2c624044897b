"""Run the timing-sensitive tests several times in a row on a busy machine (`make test-loaded`).

A course that instructors test on a room of laptops must pass on a slow or busy one, every time.
This runs `pytest -m "notebook or timing"` (every papermill notebook and the tests that rest on
deadlines, races and measured runs: conftest.TIMING_FILES) RUNS times, one after the other,
while BUSY processes spin on the CPU beside them. The busy processes stop by themselves after
a time limit and are stopped at the end in any case. Prints one line a run and a summary;
exits non-zero if any run failed.

    python tests/under_load.py --runs 5 --busy 2           # what `make test-loaded` runs
    python tests/under_load.py --runs 1 -- -k scale_out    # extra pytest arguments after --
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SELECTION = "notebook or timing"
#: The busy processes stop by themselves after this long, whatever happens to this script.
BUSY_LIMIT_SECONDS = 4 * 3600


def spin(until: float) -> None:
    """Keep one core busy until the monotonic clock reaches `until`."""
    value = 0
    while time.monotonic() < until:
        for _ in range(100_000):
            value = (value * 31 + 7) % 1_000_003


def summary_line(output: str) -> str:
    """pytest's closing line ('== 3 passed, 1 failed in 12.3s ==') without the rulers."""
    for line in reversed(output.splitlines()):
        if re.search(r"\b(passed|failed|error)", line) and " in " in line:
            return line.strip("= ").strip()
    return "no summary line (pytest did not finish)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="how many runs in a row")
    parser.add_argument("--busy", type=int, default=2, help="how many busy processes beside")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.busy < 0:
        parser.error("--runs must be 1 or more and --busy 0 or more")

    until = time.monotonic() + BUSY_LIMIT_SECONDS
    busy = [
        multiprocessing.Process(target=spin, args=(until,), daemon=True) for _ in range(args.busy)
    ]
    for process in busy:
        process.start()
    command = [sys.executable, "-m", "pytest", "-m", SELECTION, "-p", "no:cacheprovider"]
    command += args.pytest_args
    print(f"{args.busy} busy processes; {args.runs} runs of: {shlex.join(command[1:])}", flush=True)
    results = []
    try:
        for run in range(1, args.runs + 1):
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            minutes = (time.perf_counter() - start) / 60
            line = summary_line(done.stdout)
            results.append(done.returncode == 0)
            print(f"run {run}: exit {done.returncode}, {minutes:.1f} min: {line}", flush=True)
            if done.returncode != 0:
                failures = [
                    s for s in done.stdout.splitlines() if s.startswith(("FAILED", "ERROR"))
                ]
                print("\n".join(f"    {failure}" for failure in failures) or done.stdout[-3000:])
    finally:
        for process in busy:
            process.terminate()
        for process in busy:
            process.join(timeout=5)
    print(f"{sum(results)} of {len(results)} runs passed beside {args.busy} busy processes")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
