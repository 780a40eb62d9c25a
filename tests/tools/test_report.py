"""Claim verdicts of tools/report.py: a measured quantity with a spread decides only when
the ranges do not overlap; a variant swept over seeds is judged by its mean and spread
across seeds, and two variants over the same seeds seed by seed. Run by CTest with /usr/bin/python3."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import report  # noqa: E402


def run(status="done", **summary):
    return {"attrs": {"status": status}, "summary": summary}


def verdict(claim, runs):
    return report.evaluate_claims([claim], runs)[0][0]


runs = {
    "a": run(speedup_wall=2.0, speedup_wall_q25=1.9, speedup_wall_q75=2.1, psnr=30.0),
    "b": run(speedup_wall=1.95, speedup_wall_q25=1.8, speedup_wall_q75=2.05, psnr=29.0),
    "c": run(speedup_wall=1.2, speedup_wall_q25=1.1, speedup_wall_q75=1.3, psnr=31.0),
}
cases = [
    ({"left": "a", "metric": "speedup_wall", "op": ">", "right": "c"}, "holds"),
    ({"left": "c", "metric": "speedup_wall", "op": ">", "right": "a"}, "does not hold"),
    ({"left": "a", "metric": "speedup_wall", "op": ">", "right": "b"}, "inconclusive"),
    ({"left": "a", "metric": "speedup_wall", "op": ">", "value": 1.5}, "holds"),
    ({"left": "c", "metric": "speedup_wall", "op": ">", "value": 1.25}, "inconclusive"),
    ({"left": "c", "metric": "speedup_wall", "op": "<", "value": 1.0}, "does not hold"),
    # scale: left op scale x right ("at least 30% less": <= 0.7 x right)
    ({"left": "b", "metric": "psnr", "op": "<=", "right": "a", "scale": 0.7}, "does not hold"),
    ({"left": "b", "metric": "psnr", "op": "<=", "right": "a", "scale": 0.97}, "holds"),
    ({"left": "a", "metric": "psnr", "op": ">", "right": "b"}, "holds"),  # no spread: plain comparison
    ({"left": "a", "metric": "fid", "op": ">", "value": 1}, "cannot be evaluated"),
]
# Sweeps over seeds: `x` stands for x[seed=0], x[seed=1], x[seed=2] (mean, +- one std).
seeds = {
    "a[seed=0]": run(psnr=30.0), "a[seed=1]": run(psnr=31.0), "a[seed=2]": run(psnr=32.0),  # 31 +- 1
    "b[seed=0]": run(psnr=26.0), "b[seed=1]": run(psnr=27.0), "b[seed=2]": run(psnr=28.0),  # 27 +- 1
    "c[seed=0]": run(psnr=29.0), "c[seed=1]": run(psnr=31.0), "c[seed=2]": run(psnr=33.0),  # 31 +- 2
    "d[seed=0]": run(psnr=35.0), "d[seed=1]": run("failed"),
    "e[seed=0]": run(psnr=30.1), "e[seed=1]": run(psnr=31.1), "e[seed=2]": run(psnr=32.1),  # a + 0.1 on every seed
    "g[cache.interval=2,seed=0]": run(psnr=30.0), "g[cache.interval=2,seed=1]": run(psnr=30.5),
    "g[cache.interval=3,seed=0]": run(psnr=28.0), "g[cache.interval=3,seed=1]": run(psnr=28.5),
}
# Swept over calibration seeds too: runs are paired on (seed, calibration seed). q beats r by
# 0.2 on every pair although q's calibration seed 8 is 1 dB below its seed 7 (unpaired, the
# spreads would overlap); s loses to r on one pair.
for sd in (0, 1):
    for cs, shift in ((7, 0.0), (8, -1.0)):
        base = 30.0 + sd + shift
        seeds[f"q[calibration.seed={cs},seed={sd}]"] = run(psnr=base + 0.2)
        seeds[f"r[calibration.seed={cs},seed={sd}]"] = run(psnr=base)
        seeds[f"s[calibration.seed={cs},seed={sd}]"] = run(psnr=base + (0.2 if (sd, cs) != (1, 8) else -0.1))
    seeds[f"u[seed={sd}]"] = run(psnr=28.5 + sd)  # fits nothing: not swept over calibration seeds
seed_cases = [
    ({"left": "a", "metric": "psnr", "op": ">", "right": "b"}, "holds"),            # [30, 32] vs [26, 28]
    ({"left": "b", "metric": "psnr", "op": ">", "right": "a"}, "does not hold"),
    ({"left": "a", "metric": "psnr", "op": ">", "right": "c"}, "inconclusive"),     # 1 of 3 seeds
    ({"left": "e", "metric": "psnr", "op": ">", "right": "a"}, "holds"),            # spreads overlap, 3 of 3 seeds
    ({"left": "a", "metric": "psnr", "op": ">", "right": "e"}, "does not hold"),    # 0 of 3 seeds
    ({"left": "a", "metric": "psnr", "op": ">", "value": 29.5}, "holds"),
    ({"left": "a", "metric": "psnr", "op": ">", "value": 31.5}, "inconclusive"),    # mean below, spread above
    ({"left": "a[seed=1]", "metric": "psnr", "op": ">", "value": 30.9}, "holds"),  # one run, by its full name
    ({"left": "d", "metric": "psnr", "op": ">", "value": 1}, "cannot be evaluated"),  # a seed failed
    ({"left": "g", "metric": "psnr", "op": ">", "value": 1}, "cannot be evaluated"),  # spans other swept keys
    ({"left": "g[cache.interval=2]", "metric": "psnr", "op": ">", "right": "g[cache.interval=3]"}, "holds"),
    ({"left": "q", "metric": "psnr", "op": ">", "right": "r"}, "holds"),            # 4 of 4 (seed, calibration seed) pairs
    ({"left": "s", "metric": "psnr", "op": ">", "right": "r"}, "inconclusive"),     # 3 of 4
    ({"left": "r", "metric": "psnr", "op": ">", "right": "u"}, "holds"),  # u's seed beside each calibration seed: 4 of 4
    ({"left": "u", "metric": "psnr", "op": "<", "right": "q"}, "holds"),  # (unpaired the spreads overlap)
]
failed = 0
for name, want in [("fora_n2[seed=1]", "fora_n2"), ("fora[cache.interval=2,seed=1]", "fora[cache.interval=2]"),
                   ("fora[seed=0,cache.layers=[attn, mlp]]", "fora[cache.layers=[attn, mlp]]"),
                   ("cache.interval=2,seed=1", "cache.interval=2"), ("fora_n2", "fora_n2"),
                   ("reference[seed=3]", "reference"), ("ptq[calibration.seed=8,seed=1]", "ptq"),
                   ("ptq[cache.interval=2,calibration.seed=8]", "ptq[cache.interval=2]")]:
    got = report.without_seed(name)
    failed += got != want
    print(("ok  " if got == want else "FAIL") + f" without_seed({name}) = {got} (want {want})")
# References named by their sweep point, or (when two share it: variants with their own
# pipelines) by the first run using each.
for attrs, full, want in [({"overrides": "(reference of add[seed=0])"}, False, "reference[seed=0]"),
                          ({"overrides": "(reference of add[seed=0])"}, True, "reference[add[seed=0]]"),
                          ({"overrides": "(reference of add)"}, False, "reference[add]")]:
    got = report.reference_label(attrs, full=full)
    failed += got != want
    print(("ok  " if got == want else "FAIL") + f" reference_label({attrs}, full={full}) = {got} (want {want})")
agg = report.aggregate(seeds, ["a[seed=0]", "a[seed=1]", "a[seed=2]"], "psnr")
ok = agg["n"] == 3 and abs(agg["mean"] - 31.0) < 1e-12 and abs(agg["lo"] - 30.0) < 1e-12 and abs(agg["hi"] - 32.0) < 1e-12
failed += not ok
print(("ok  " if ok else "FAIL") + f" aggregate over 3 seeds: {agg}")
for claim, want, on in [(c, w, runs) for c, w in cases] + [(c, w, seeds) for c, w in seed_cases]:
    got = verdict(claim, on)
    ok = got == want
    failed += not ok
    print(("ok  " if ok else "FAIL") + f" {claim} -> {got} (want {want})")
# The label-overlap check the figures run under CACHELAB_REPORT_STRICT (the render test).
import matplotlib.pyplot as plt  # noqa: E402
import report_figures  # noqa: E402

fig, ax = plt.subplots(figsize=(4, 3))
ax.set_title("a title")
clean = report_figures.overlapping_texts(fig)
ax.text(0.5, 0.5, "first label", transform=ax.transAxes)
ax.text(0.52, 0.5, "second label", transform=ax.transAxes)
clash = report_figures.overlapping_texts(fig)
plt.close(fig)
ok = clean == [] and ("first label", "second label") in clash
failed += not ok
print(("ok  " if ok else "FAIL") + f" overlap check: clean figure {clean}, overlapping texts {clash}")
# The Pareto front of the speed-vs-quality figure (speedup up; quality up, or down for FID).
pts = [(1.0, 40.0), (2.0, 36.0), (3.0, 33.0), (2.5, 30.0), (1.5, 35.0), (3.0, 31.0), (0.9, float("inf"))]
front_up = report_figures.pareto_front(pts, True)
front_down = report_figures.pareto_front([(1.0, 60.0), (2.0, 58.0), (3.0, 63.0), (2.5, 59.0), (1.5, 61.0)], False)
ok = front_up == [6, 0, 1, 2] and front_down == [1, 3, 2]
failed += not ok
print(("ok  " if ok else "FAIL") + f" Pareto fronts {front_up} (want [6, 0, 1, 2]), {front_down} (want [1, 3, 2])")
# A claim with the paper's figure reads "paper: ... / here: ..." and keeps its verdict.
v, _, sentence, _ = report.evaluate_claims([{"left": "a", "metric": "psnr", "op": ">", "right": "b",
                                             "paper": "FID 2.27 -> 2.43 at N = 3 (Table 1)"}], runs)[0]
ok = v == "holds" and sentence.startswith("paper: FID 2.27 -> 2.43 at N = 3 (Table 1) / here: psnr(a) = 30")
failed += not ok
print(("ok  " if ok else "FAIL") + f" paper beside the measurement: {sentence}")
print(f"report: {failed} failed")
sys.exit(1 if failed else 0)
