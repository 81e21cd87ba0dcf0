"""Mutation score per module from `mutmut results --all true` (run by `make mutation`).

Killed = the tests failed (or hung: a timeout) with the mutant in place.  "no tests" (no fast
test of the module reaches the mutated line) and "survived" count against the score.

``--sample K MODULE[:RATE]...`` prints instead the names of a fixed 1-in-K (or 1-in-RATE) sample
of those modules' mutants (chosen by a hash of the name, so the same mutant is in or out on
every run): the modules whose tests train or convert take seconds per mutant, and the figures
and claims (hundreds of mutants, no target of their own), are scored on a sample.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections import Counter, defaultdict

TARGETS = {"stats": 0.90, "reinit": 0.90, "models": 0.90, "data.variants": 0.90}
OVERALL_TARGET = 0.80
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def _row(name: str, n: int, killed: float, survived: int, no_tests: int, target: float | None) -> bool:
    """Print one row of the table; False when a target is missed."""
    score = killed / n
    met = target is None or score >= target
    flag = "" if target is None else f"≥ {target:.0%}" + ("" if met else "  BELOW")
    print(f"{name:<16}{n:>8}{killed:>8.0f}{survived:>9}{no_tests:>9}{score:>8.1%}  {flag}")
    return met


def _results() -> list[tuple[str, str, str]]:
    """(mutant name, module, status) of every generated mutant."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        match = re.match(r"\s*(convbias\.(.+?)\.x[_ǁ].*?):\s*(.+)$", line)
        if match:
            rows.append(match.groups())
    return rows


def in_sample(name: str, every: int) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % every == 0


def sample(every: int, modules: list[str]) -> list[str]:
    """A fixed 1-in-``every`` sample of the mutants of ``modules`` (dotted, e.g. convbias.train;
    ``convbias.figures:4`` gives that module its own rate, 1 in 4)."""
    rates = {m.split(":")[0] + ".": int(m.split(":")[1]) if ":" in m else every for m in modules}
    return [name for name, _, _ in _results()
            for prefix, rate in rates.items() if name.startswith(prefix) and in_sample(name, rate)]


def main() -> int:
    if sys.argv[1:2] == ["--sample"]:
        print("\n".join(sample(int(sys.argv[2]), sys.argv[3:])))
        return 0
    by_module: dict[str, Counter] = defaultdict(Counter)
    survivors: list[str] = []
    for name, module, status in _results():
        by_module[module][status] += 1
        if status not in KILLED and status != "not checked":
            survivors.append(f"{name}: {status}")
    if not by_module:
        print("no mutants found: run `make mutation` first", file=sys.stderr)
        return 2
    print(f"{'module':<16}{'mutants':>8}{'killed':>8}{'survived':>9}{'no tests':>9}{'score':>8}  target")
    ok, everything, killed_estimate, sampled = True, 0, 0.0, []
    for module, counts in sorted(by_module.items()):
        generated = sum(counts.values())
        n = generated - counts["not checked"]
        if n == 0:  # not in this run's selection (MUTANTS, SAMPLED)
            continue
        killed = sum(counts[s] for s in KILLED)
        ok &= _row(module, n, killed, counts["survived"], counts["no tests"], TARGETS.get(module))
        if n < generated:
            sampled.append(f"{module} {n} of {generated}")
        everything += generated
        killed_estimate += killed / n * generated  # a sampled module counts with all its mutants
    print(f"{'overall':<16}{everything:>8}{killed_estimate:>8.0f}{'':>18}{killed_estimate / everything:>8.1%}  "
          f"≥ {OVERALL_TARGET:.0%}" + ("" if killed_estimate / everything >= OVERALL_TARGET else "  BELOW"))
    ok &= killed_estimate / everything >= OVERALL_TARGET
    if sampled:
        print("scored on a sample (mutants checked of all; overall weighs each module by all its mutants): "
              + ", ".join(sampled))
    total = Counter(status for counts in by_module.values() for status in counts.elements())
    if total["not checked"]:
        print(f"{total['not checked']} mutants not checked: outside MUTANTS or the sample of SAMPLED, or the run "
              "was interrupted (`make mutation` continues it)")
    with open("mutants/survivors.txt", "w") as f:
        f.write("\n".join(survivors) + "\n")
    print("survivors: mutants/survivors.txt; see one with `.venv/bin/mutmut show NAME`")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
