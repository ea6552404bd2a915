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
    m = re.match(r"\s*([\w.]+?)\.(x[^:]*?)__mutmut_\d+: (.+)", line)
    if not m:
        continue
    module, status = m.group(1), m.group(3).strip()
    counts[module][status] += 1
    if status not in ("killed", "timeout"):
        survivors.append(line.strip())
statuses = ["killed", "survived", "timeout", "no tests", "not checked"]
print(f"{'module':24}" + "".join(f"{s:>12}" for s in statuses) + f"{'killed %':>10}")
total = collections.Counter()
for module in sorted(counts):
    c = counts[module]
    total.update(c)
    checked = c["killed"] + c["survived"] + c["timeout"]
    pct = f"{100 * (c['killed'] + c['timeout']) / checked:9.1f}%" if checked else f"{'-':>10}"
    print(f"{module:24}" + "".join(f"{c[s]:12d}" for s in statuses) + pct)
checked = total["killed"] + total["survived"] + total["timeout"]
print(f"{'total':24}" + "".join(f"{total[s]:12d}" for s in statuses) + f"{100 * (total['killed'] + total['timeout']) / max(checked, 1):9.1f}%")
print("\nnot killed:" if survivors else "\nevery mutant killed")
for s in survivors:
    print("  " + s)
PY
