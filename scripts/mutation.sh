#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut (config: [tool.mutmut] in pyproject.toml).
# Prints killed / survived / other per module, then the surviving mutants. Slow (tens of minutes on 2 cores):
# not part of CI. Usage: scripts/mutation.sh [--fresh]   (--fresh discards mutmut's cached results first)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fresh" ]]; then rm -rf mutants; fi
export OMP_NUM_THREADS=1 TQDM_DISABLE=1
unset PYTHONPATH  # mutmut puts its mutated copy (mutants/src) first on the path; the worktree's src must not shadow it
python -m mutmut run --max-children "${MUTMUT_CHILDREN:-3}" > mutants-run.log 2>&1 || { tail -20 mutants-run.log; exit 1; }
python -m mutmut results --all true > mutants-results.txt
python - <<'PY'
import collections, re
counts = collections.defaultdict(collections.Counter)
survivors = []
for line in open("mutants-results.txt"):
    m = re.match(r"\s*([\w.]+)\.x[^:]*__mutmut_\d+: (.+)", line) or re.match(r"\s*([\w.]+?)\.[^.:]+__mutmut_\d+: (.+)", line)
    if not m:
        continue
    module, status = m.group(1), m.group(2).strip()
    counts[module][status] += 1
    if status != "killed":
        survivors.append(line.strip())
print(f"{'module':32} {'killed':>7} {'survived':>9} {'other':>6} {'killed %':>9}")
total = collections.Counter()
for module in sorted(counts):
    c = counts[module]
    other = sum(v for k, v in c.items() if k not in ("killed", "survived"))
    n = sum(c.values())
    total.update(c)
    print(f"{module:32} {c['killed']:7d} {c['survived']:9d} {other:6d} {100 * c['killed'] / n:8.1f}%")
n = sum(total.values())
other = n - total["killed"] - total["survived"]
print(f"{'total':32} {total['killed']:7d} {total['survived']:9d} {other:6d} {100 * total['killed'] / max(n, 1):8.1f}%")
print("\nnot killed:" if survivors else "\nevery mutant killed")
for s in survivors:
    print("  " + s)
PY
