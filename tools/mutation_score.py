"""Mutation score per module from `mutmut results --all true` (run by `make mutation`).

Killed = the tests failed (or hung: a timeout) with the mutant in place.  "no tests" (no fast
test of the module reaches the mutated line) and "survived" count against the score.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict

TARGETS = {"stats": 0.90, "reinit": 0.90, "models": 0.90, "data.variants": 0.90}
OVERALL_TARGET = 0.80
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def _row(name: str, counts: Counter, target: float | None) -> bool:
    """Print one row of the table; False when a target is missed. Modules outside the run are skipped."""
    n, killed = sum(counts.values()) - counts["not checked"], sum(counts[s] for s in KILLED)
    if n == 0:  # not in this run's selection (MUTANTS)
        return True
    score = killed / n
    met = target is None or score >= target
    flag = "" if target is None else f"≥ {target:.0%}" + ("" if met else "  BELOW")
    print(f"{name:<16}{n:>8}{killed:>8}{counts['survived']:>9}{counts['no tests']:>9}{score:>8.1%}  {flag}")
    return met


def main() -> int:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                         capture_output=True, text=True, check=True).stdout
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: list[str] = []
    for line in out.splitlines():
        match = re.match(r"\s*convbias\.(.+?)\.x[_ǁ].*?:\s*(.+)$", line)
        if not match:
            continue
        module, status = match.groups()
        by_module[module][status] += 1
        if status not in KILLED and status != "not checked":
            survivors.append(f"{line.strip()}")
    if not by_module:
        print("no mutants found: run `make mutation` first", file=sys.stderr)
        return 2
    total, ok = Counter(), True
    print(f"{'module':<16}{'mutants':>8}{'killed':>8}{'survived':>9}{'no tests':>9}{'score':>8}  target")
    for module in sorted(by_module):
        total.update(by_module[module])
        ok &= _row(module, by_module[module], TARGETS.get(module))
    ok &= _row("overall", total, OVERALL_TARGET)
    if total["not checked"]:
        print(f"{total['not checked']} mutants not checked: outside MUTANTS, or the run was interrupted "
              "(`make mutation` continues it)")
    with open("mutants/survivors.txt", "w") as f:
        f.write("\n".join(survivors) + "\n")
    print("survivors: mutants/survivors.txt; see one with `.venv/bin/mutmut show NAME`")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
