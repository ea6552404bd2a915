"""benchmarks/photo/verdicts.py applies issue 20's pre-registered criteria as written: each verdict on fixed numbers."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write(results: Path, name: str, method: str, fids: list[float], kids: list[float], budget: int = 3000) -> None:
    for seed, (fid, kid) in enumerate(zip(fids, kids)):
        path = results / name / f"b{budget}" / f"{method}_seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"method": method, "seed": seed, "fid": fid, "kid_mean": kid / 1e3}))


def verdicts(results: Path) -> list[str]:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "photo" / "verdicts.py"), "--results", str(results)],
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_pending_until_every_seed_is_in(tmp_path):
    write(tmp_path, "horse2zebra_64", "dcd", [290, 291, 292], [200, 200, 200])
    write(tmp_path, "horse2zebra_64", "dcd_own", [270, 271], [190, 190])  # seed 2 missing
    lines = verdicts(tmp_path)
    assert lines[0].startswith("part 4 on (c): pending")
    assert lines[-1] == "bf16 default: pending"


def test_objective_confirmed_tie_and_not_confirmed(tmp_path):
    write(tmp_path, "horse2zebra_64", "dcd", [290, 290, 290], [200, 200, 200])
    write(tmp_path, "horse2zebra_64", "dcd_own", [280, 285, 295], [190, 190, 190])  # both means lower, 2 seeds of 3
    assert verdicts(tmp_path)[0] == ("part 4 on (c): confirmed: dcd_own vs dcd, mean FID 286.67 vs 290.00, "
                                     "mean KID x1e3 190.00 vs 200.00, lower FID in 2 of 3 seeds")
    write(tmp_path, "horse2zebra_64", "dcd_own", [250, 295, 295], [190, 190, 190])  # both means lower, 1 seed of 3
    assert verdicts(tmp_path)[0].startswith("part 4 on (c): tie:")
    write(tmp_path, "horse2zebra_64", "dcd_own", [280, 280, 280], [210, 210, 210])  # FID lower, KID higher
    assert verdicts(tmp_path)[0].startswith("part 4 on (c): tie:")
    write(tmp_path, "horse2zebra_64", "dcd_own", [300, 280, 300], [210, 210, 210])  # both means higher
    assert verdicts(tmp_path)[0].startswith("part 4 on (c): not confirmed:")


def test_bf16_may_be_worse_by_at_most_one_fp32_std(tmp_path):
    # fp32 FID std over seeds (n-1) is 10, KID's is 20: bf16 may be worse by up to those.
    for method in ("none", "dcd_own"):
        write(tmp_path, "horse2zebra_64", method, [290, 300, 310], [180, 200, 220])
        write(tmp_path, "horse2zebra_64_bf16", method, [300, 310, 320], [200, 220, 240])  # worse by exactly 10 and 20
    lines = verdicts(tmp_path)
    assert "bf16, none: passes: FID bf16 - fp32 = +10.00 (allowed +10.00), KID x1e3 bf16 - fp32 = +20.00 (allowed +20.00)" in lines
    assert lines[-1] == "bf16 default: bf16 becomes the default on native-bf16 CPUs"
    write(tmp_path, "horse2zebra_64_bf16", "dcd_own", [300, 310, 320], [201, 221, 241])  # KID worse by 21 > 20
    lines = verdicts(tmp_path)
    assert any(line.startswith("bf16, dcd_own: fails:") for line in lines)
    assert lines[-1] == "bf16 default: the default stays train.mixed_precision=no"


def test_quickstart_objective_decided_on_d_then_confirmed_or_refuted_on_e(tmp_path):
    def line(start: str) -> str:
        return next(x for x in verdicts(tmp_path) if x.startswith(start))

    assert line("quickstart objective on (d)").endswith("pending (dcd_own seeds 0-2 of edges2photo_64_qsobj and edges2photo_64_teacher2)")
    write(tmp_path, "edges2photo_64_teacher2", "dcd_own", [270, 280, 290], [200, 200, 200])  # PR: mean 280, std 10
    write(tmp_path, "edges2photo_64_qsobj", "dcd_own", [280, 290, 300], [250, 250, 250])  # QS worse by exactly 10: kept
    assert line("quickstart objective on (d)") == ("quickstart objective on (d): QS: mean FID QS 290.00, PR 280.00 "
                                                   "(QS may be worse by up to 10.00)")
    assert line("quickstart objective on (e)").startswith("quickstart objective on (e): pending")
    write(tmp_path, "fashion_bag_qs", "dcd", [120, 130, 140], [80, 80, 80], budget=300)
    write(tmp_path, "fashion_bag_pr", "dcd", [125, 125, 145], [90, 90, 90], budget=300)
    assert line("quickstart objective on (e)") == ("quickstart objective on (e): confirmed: QS vs PR, mean FID 130.00 vs "
                                                   "131.67, mean KID x1e3 80.00 vs 90.00, lower FID in 2 of 3 seeds")
    write(tmp_path, "edges2photo_64_qsobj", "dcd_own", [281, 290, 300], [250, 250, 250])  # worse by 10.33: PR chosen
    assert line("quickstart objective on (d)").startswith("quickstart objective on (d): PR:")
    assert line("quickstart objective on (e)").startswith("quickstart objective on (e): refuted: PR vs QS,")


def test_dcd_term_over_own_discriminator_is_dropped_only_where_it_costs_on_d_and_c(tmp_path):
    def line(start: str) -> str:
        return next(x for x in verdicts(tmp_path) if x.startswith(start))

    assert line("paper recipes' DCD term") == "paper recipes' DCD term: pending"
    write(tmp_path, "edges2photo_64_teacher2", "dcd_own", [270, 280, 290], [200, 200, 200])
    write(tmp_path, "edges2photo_64_teacher2", "omgd_own", [265, 275, 295], [190, 190, 190])  # lower on both, 2 of 3
    assert line("DCD over own D on (d) PR") == ("DCD over own D on (d) PR: costs: dcd_own vs omgd_own, mean FID 280.00 vs "
                                                "278.33, mean KID x1e3 200.00 vs 190.00, lower FID in 1 of 3 seeds")
    assert line("DCD over own D on (c)").startswith("DCD over own D on (c): pending")
    assert line("paper recipes' DCD term") == "paper recipes' DCD term: pending"
    write(tmp_path, "horse2zebra_64", "dcd_own", [270, 270, 270], [200, 200, 200])
    write(tmp_path, "horse2zebra_64", "omgd_own", [260, 280, 280], [190, 190, 190])  # dcd_own: FID lower, KID higher: a tie
    assert line("DCD over own D on (c)").startswith("DCD over own D on (c): no measurable difference:")
    assert line("paper recipes' DCD term") == "paper recipes' DCD term: kept ((d): costs, (c): no measurable difference)"
    write(tmp_path, "horse2zebra_64", "omgd_own", [250, 260, 280], [190, 190, 190])  # both means higher for dcd_own
    assert line("paper recipes' DCD term") == "paper recipes' DCD term: dropped (it costs on (d) and on (c))"
    write(tmp_path, "edges2photo_64_qsobj", "dcd_own", [250, 250, 250], [150, 150, 150])
    write(tmp_path, "edges2photo_64_qsobj", "omgd_own", [260, 240, 260], [160, 160, 160])
    assert line("DCD over own D on (d) QS").startswith("DCD over own D on (d) QS: adds:")
