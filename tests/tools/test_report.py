"""Claim verdicts of tools/report.py: a measured quantity with a spread decides only when
the ranges do not overlap. Run by CTest with /usr/bin/python3."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import report  # noqa: E402


def run(**summary):
    return {"attrs": {"status": "done"}, "summary": summary}


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
    ({"left": "a", "metric": "psnr", "op": ">", "right": "b"}, "holds"),  # no spread: plain comparison
    ({"left": "a", "metric": "fid", "op": ">", "value": 1}, "cannot be evaluated"),
]
failed = 0
for claim, want in cases:
    got = verdict(claim, runs)
    ok = got == want
    failed += not ok
    print(("ok  " if ok else "FAIL") + f" {claim} -> {got} (want {want})")
print(f"report: {len(cases) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
