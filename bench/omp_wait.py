"""OpenMP's wait policy when torch processes share too few cores (why `make test` sets
OMP_WAIT_POLICY=PASSIVE): K copies of a CPU training command run at once, under the default policy
(threads waiting for work spin for a while) and under PASSIVE (they sleep), interleaved, and the
wall and CPU times of each round are printed with the ratio default / PASSIVE (min and median).

    .venv/bin/python bench/omp_wait.py                 # 2 copies of `gpu_check.py --device cpu --small`
    .venv/bin/python bench/omp_wait.py --copies 4 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--small"]  # as tests/test_bench.py runs it


def round_of(command: list[str], copies: int, policy: str | None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, of all copies) of ``copies`` runs at once."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(copies)]
    if any(p.wait() for p in procs):
        raise SystemExit(f"error: a copy of {' '.join(command)} failed; run it alone to see why")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=2, help="commands at once (default 2: 4 torch threads on 2 cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--command", type=shlex.split, default=COMMAND,
                        help="the command, one quoted string (default: gpu_check.py --device cpu --small)")
    args = parser.parse_args(argv)
    print(f"{args.copies} copies at once of: {' '.join(args.command)}  ({os.cpu_count()} CPUs)")
    times: dict[str, list[tuple[float, float]]] = {"default": [], "PASSIVE": []}
    for r in range(args.repeats):
        for name in times:  # interleaved: both sides see the same machine
            wall, cpu = round_of(args.command, args.copies, None if name == "default" else name)
            times[name].append((wall, cpu))
            print(f"round {r + 1} {name:>7}: {wall:6.1f} s wall {cpu:7.1f} s CPU", flush=True)
    for i, what in ((0, "wall"), (1, "CPU")):
        ratios = [d[i] / p[i] for d, p in zip(times["default"], times["PASSIVE"])]
        print(f"{what:>4} time default / PASSIVE: min {min(ratios):.2f}x  median {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
