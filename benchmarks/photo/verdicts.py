"""Issue 20's two pre-registered criteria, applied to the committed results (benchmarks/results/).

The criteria were written in RESULTS.md before the runs they judge had finished; this script applies them as
written, so the verdict is not a reading of the table by hand:

- Part 4 ("Part 4: the default objective", written 13:30 UTC): on (c), `dcd_own` confirms the decision taken on (d)
  and (a) if its mean test FID **and** mean KID over the 3 seeds are below `dcd`'s, with a lower FID in at least 2 of
  the 3 seeds. It is "not confirmed" if it loses on both means; anything else (one mean each way, a win in 1 seed of
  3 with both means lower) is a tie.
- bf16 ("Third speed session", written 15:40 UTC): bf16 becomes the default on CPUs with native bf16 only if, for
  both `none` and `dcd_own` on (c), bf16's mean FID and mean KID are each no worse than fp32's by more than fp32's
  standard deviation over the 3 seeds (n-1, as the tables).
- The quickstart's objective ("Part 4 for the quickstart", written 18:35 UTC): QS (its own: L1 terms, own
  discriminator, no VGG) stays if on (d), from the second (d) teacher, its mean FID is below PR's (the paper recipes':
  VGG terms + own discriminator) or above it by no more than PR's std over seeds; otherwise PR. The choice is then
  confirmed on task (e) (a held-out Fashion-MNIST class) by the rule of part 4 above, the other candidate in `dcd`'s
  place; "refuted" where it loses both means.

- The DCD term over the student's own discriminator ("The matched controls", written 21:15 UTC): on each of (c),
  (d) with the paper recipes' objective and (d) with the quickstart's, part 4's rule between `dcd_own` and
  `omgd_own` (the same objective without the DCD term) reads "adds" (confirmed), "costs" (not confirmed) or "no
  measurable difference" (tie). The paper recipes drop the DCD term only if both (d) and (c) say "costs".

    python benchmarks/photo/verdicts.py [--results benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SEEDS = (0, 1, 2)
DCD_TERM = {"confirmed": "adds", "not confirmed": "costs", "tie": "no measurable difference"}  # part 4's words, for the controls


def load(results: Path, name: str, method: str, budget: int = 3000) -> list[dict] | None:
    """The 3 seeds' results of one method, or None while any is missing."""
    files = [results / name / f"b{budget}" / f"{method}_seed{s}.json" for s in SEEDS]
    if not all(f.is_file() for f in files):
        return None
    return [json.loads(f.read_text()) for f in files]


def objective_verdict(own: list[dict], ref: list[dict]) -> tuple[str, str]:
    """Whether ``own`` beats ``ref`` by part 4's rule: ('confirmed' | 'not confirmed' | 'tie', the numbers behind it)."""
    fid_own, fid_ref = [r["fid"] for r in own], [r["fid"] for r in ref]
    kid_own, kid_ref = [r["kid_mean"] * 1e3 for r in own], [r["kid_mean"] * 1e3 for r in ref]
    fid_lower = statistics.mean(fid_own) < statistics.mean(fid_ref)
    kid_lower = statistics.mean(kid_own) < statistics.mean(kid_ref)
    seeds_won = sum(a < b for a, b in zip(fid_own, fid_ref))
    if fid_lower and kid_lower and seeds_won >= 2:
        verdict = "confirmed"
    elif not fid_lower and not kid_lower:
        verdict = "not confirmed"
    else:
        verdict = "tie"
    why = (f"mean FID {statistics.mean(fid_own):.2f} vs {statistics.mean(fid_ref):.2f}, mean KID x1e3 "
           f"{statistics.mean(kid_own):.2f} vs {statistics.mean(kid_ref):.2f}, lower FID in {seeds_won} of {len(SEEDS)} seeds")
    return verdict, why


def quickstart_choice(qs: list[dict], pr: list[dict]) -> tuple[str, str]:
    """The quickstart's objective decided on (d): ('QS' | 'PR', the numbers behind it)."""
    fid_qs, fid_pr = statistics.mean(r["fid"] for r in qs), statistics.mean(r["fid"] for r in pr)
    allowed = statistics.stdev(r["fid"] for r in pr)
    choice = "QS" if fid_qs - fid_pr <= allowed else "PR"
    return choice, f"mean FID QS {fid_qs:.2f}, PR {fid_pr:.2f} (QS may be worse by up to {allowed:.2f})"


def precision_verdict(bf16: list[dict], fp32: list[dict]) -> tuple[bool, str]:
    """The bf16 criterion for one method: (passes, the numbers behind it)."""
    parts, ok = [], True
    for key, scale, label in (("fid", 1.0, "FID"), ("kid_mean", 1e3, "KID x1e3")):
        low, full = [r[key] * scale for r in bf16], [r[key] * scale for r in fp32]
        worse, allowed = statistics.mean(low) - statistics.mean(full), statistics.stdev(full)
        ok &= worse <= allowed
        parts.append(f"{label} bf16 - fp32 = {worse:+.2f} (allowed +{allowed:.2f})")
    return ok, ", ".join(parts)


def main() -> None:
    """Print every verdict, or what each still waits for."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = ap.parse_args()

    own, ref = load(args.results, "horse2zebra_64", "dcd_own"), load(args.results, "horse2zebra_64", "dcd")
    if own is None or ref is None:
        print("part 4 on (c): pending (dcd and dcd_own need seeds 0-2 under horse2zebra_64/b3000)")
    else:
        verdict, why = objective_verdict(own, ref)
        print(f"part 4 on (c): {verdict}: dcd_own vs dcd, {why}")

    qs, pr = load(args.results, "edges2photo_64_qsobj", "dcd_own"), load(args.results, "edges2photo_64_teacher2", "dcd_own")
    if qs is None or pr is None:
        print("quickstart objective on (d): pending (dcd_own seeds 0-2 of edges2photo_64_qsobj and edges2photo_64_teacher2)")
    else:
        choice, why = quickstart_choice(qs, pr)
        print(f"quickstart objective on (d): {choice}: {why}")
        on_e = {"QS": load(args.results, "fashion_bag_qs", "dcd", 300), "PR": load(args.results, "fashion_bag_pr", "dcd", 300)}
        other = "PR" if choice == "QS" else "QS"
        if on_e[choice] is None or on_e[other] is None:
            print("quickstart objective on (e): pending (dcd seeds 0-2 of fashion_bag_qs and fashion_bag_pr, budget 300)")
        else:
            verdict, why = objective_verdict(on_e[choice], on_e[other])
            verdict = {"not confirmed": "refuted"}.get(verdict, verdict)
            print(f"quickstart objective on (e): {verdict}: {choice} vs {other}, {why}")

    term = {}
    for label, name in (("(c)", "horse2zebra_64"), ("(d) PR", "edges2photo_64_teacher2"), ("(d) QS", "edges2photo_64_qsobj")):
        dcd, control = load(args.results, name, "dcd_own"), load(args.results, name, "omgd_own")
        if dcd is None or control is None:
            print(f"DCD over own D on {label}: pending (dcd_own and omgd_own need seeds 0-2 under {name}/b3000)")
            continue
        verdict, why = objective_verdict(dcd, control)
        term[label] = DCD_TERM[verdict]
        print(f"DCD over own D on {label}: {term[label]}: dcd_own vs omgd_own, {why}")
    if "(c)" not in term or "(d) PR" not in term:
        print("paper recipes' DCD term: pending")
    elif term["(c)"] == term["(d) PR"] == "costs":
        print("paper recipes' DCD term: dropped (it costs on (d) and on (c))")
    else:
        print(f"paper recipes' DCD term: kept ((d): {term['(d) PR']}, (c): {term['(c)']})")

    passes = []
    for method in ("none", "dcd_own"):
        low, full = load(args.results, "horse2zebra_64_bf16", method), load(args.results, "horse2zebra_64", method)
        if low is None or full is None:
            print(f"bf16, {method}: pending (seeds 0-2 in fp32 and bf16)")
            passes.append(None)
            continue
        ok, why = precision_verdict(low, full)
        print(f"bf16, {method}: {'passes' if ok else 'fails'}: {why}")
        passes.append(ok)
    overall = "pending" if None in passes else ("bf16 becomes the default on native-bf16 CPUs" if all(passes)
                                                  else "the default stays train.mixed_precision=no")
    print(f"bf16 default: {overall}")


if __name__ == "__main__":
    main()
