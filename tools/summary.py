"""Committed summaries of experiments, and fresh runs compared with them.

A summary (docs/summaries/<experiment>.json) is what the docs' numbers are generated from:
per run (variant and seed) its run id (which hashes the resolved config and the files it
read), status and metrics; the claims with their verdicts; and where the runs were made
(git commit, CPU and its float-relevant flags, OpenBLAS kernel, threads, BLAS, LibTorch).
Runs of the same experiment under perturbations that should not matter (2 threads instead
of 1, another OpenBLAS kernel path, another calibration seed) are folded in with
--perturbed: a claim whose verdict changes under one of them is `fragile`, whatever it is
on the main runs.

Used by tools/report.py (`cachelab report results/EXP --summary F | --compare F |
--perturbed DIR`) and tools/docs.py (the docs' tables).
"""
import json
import math
import os

# The metrics a summary keeps per run, and how far a re-run may move each before the
# comparison calls it moved: ("abs", d) an absolute difference, ("rel", r) a relative one.
# FLOPs speedups and reuse fractions are counts (deterministic); wall-clock speedups vary
# by up to 30% between identical runs here; PSNR of quantized runs moved by up to 1.7 dB
# per seed when only OpenBLAS's kernel path changed (see docs/reproduction.md).
TOLERANCE = {
    "speedup_flops": ("rel", 0.001),
    "reuse_fraction": ("abs", 0.005),
    "speedup_wall": ("rel", 0.30),
    "psnr": ("abs", 0.5),
    "ssim": ("abs", 0.005),
    "mse": ("rel", 0.15),
    "final_err_rel_l1": ("rel", 0.15),
    "fid": ("abs", 1.0),
    "fid_ref": ("abs", 1.0),
    "accuracy": ("abs", 0.03),
    "accuracy_worst_class": ("abs", 0.05),
    "token_match": ("abs", 0.02),
    "exact_match": ("abs", 0.02),  # greedy decoding: a float tie flipped by another BLAS path moves a few answers
    "exact_match_reference": ("abs", 0.02),
    "exact_match_loss": ("abs", 0.03),  # a difference of two exact_match values
    "exact_match_retained": ("abs", 0.05),  # a ratio of two exact_match values
    "psnr_gt": ("abs", 0.5),  # AR video (video_quality): against the ground truth, the reference, the judge
    "psnr_gt_last": ("abs", 0.5),
    "psnr_ref_last": ("abs", 0.5),
    "identity": ("abs", 0.03),
    "identity_last": ("abs", 0.05),
    "identity_label": ("abs", 0.03),
    "kv_peak_bytes": ("rel", 0.001),  # a count of stored keys and values
    "mean_forwards": ("rel", 0.05),  # forwards per batch: a decoder's choices move with a flipped tie
    "flops": ("rel", 0.05),  # the run's FLOPs: as many forwards as the decoder's choices make
}
EXTRA = ["speedup_wall_q25", "speedup_wall_q75", "wall_s", "forwards", "tokens_per_s", "ref_tokens_per_s", "frames_per_s",
         "ref_frames_per_s"]  # kept, never compared
ENVIRONMENT = ["git_sha", "git_dirty", "cpu", "threads", "blas", "torch_version", "host"]
SCHEMA = 1


def rounded(v):
    """6 significant digits (the summaries stay small and diff well); inf/nan as strings."""
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(f"{v:.6g}")


def environment(runs):
    """Every distinct value of each environment attribute over the runs, and the time span."""
    env = {}
    for key in ENVIRONMENT:
        seen = []
        for r in runs.values():
            v = r["attrs"].get(key)
            v = int(v) if key in ("threads", "git_dirty") and v is not None else v
            if v is not None and v not in seen:
                seen.append(v)
        env[key] = seen[0] if len(seen) == 1 else seen
    times = sorted(str(r["attrs"].get("created_utc", "")) for r in runs.values())
    env["created_utc"] = [times[0], times[-1]] if times else []
    return env


def run_entries(runs, seed_of, without_seed):
    out = {}
    for name, r in sorted(runs.items(), key=lambda kv: (kv[1]["order"], kv[0])):
        s = r["summary"]
        metrics = {k: rounded(s[k]) for k in list(TOLERANCE) + EXTRA if k in s}
        seed = seed_of(runs, name)  # `1`, or `1/c8` with a calibration seed
        seed, _, cseed = (seed or "").partition("/c")
        out[name] = {"group": without_seed(name), "seed": int(seed) if seed else None,
                     "run_id": r["attrs"].get("run_id", r["file"][:-3]), "status": r["attrs"].get("status"),
                     "metrics": metrics}
        if cseed:
            out[name]["calibration_seed"] = int(cseed)
    return out


def claim_entries(claims, evaluated):
    out = []
    for c, (verdict, label, sentence, detail) in zip(claims, evaluated):
        e = {k: c[k] for k in ("left", "metric", "op", "right", "value", "scale") if k in c}
        e.update({"text": label, "verdict": verdict, "sentence": sentence})
        e.update({k: detail[k] for k in ("wins", "n", "margins") if k in detail})
        out.append(e)
    return out


def verdict_text(claim):
    """`holds (3 of 3)`, `fragile: holds (3 of 3) here; inconclusive (2 of 3) with 2 threads`, or
    `fragile: holds (3 of 3) here, by a smallest margin of 0.03, inside the 0.45 ...`."""
    def one(c):
        return c["verdict"] + (f" ({c['wins']} of {c['n']})" if "wins" in c else "")
    if not claim.get("fragile"):
        return one(claim)
    if claim.get("fragile_by") == "margin":
        smallest = min(abs(v) for v in claim["margins"].values())
        return (f"fragile: {one(claim)} here, by a smallest margin of {smallest:.3g}, inside the "
                f"{claim['perturbation_spread']:.3g} the perturbations moved a margin by")
    others = "; ".join(f"{one(p)} {p['label']}" for p in claim["perturbed"] if p["verdict"] != claim["verdict"])
    return f"fragile: {one(claim)} here; {others}"


def perturb(claims, perturbed):
    """Marks each claim fragile when a perturbed copy of the experiment gives another verdict,
    and records the perturbation's spread of the per-seed margins (left - right) beside the
    seeds' spread. `perturbed`: [(label, claim entries of that copy)]."""
    for i, c in enumerate(claims):
        c["perturbed"] = []
        margins = {k: [v] for k, v in (c.get("margins") or {}).items()}
        for label, other in perturbed:
            o = other[i]
            c["perturbed"].append({"label": label, **{k: o[k] for k in ("verdict", "wins", "n") if k in o}})
            for k, v in (o.get("margins") or {}).items():
                margins.setdefault(k, []).append(v)
        base = [v for v in (c.get("margins") or {}).values() if math.isfinite(v)]
        if len(base) > 1:
            mean = sum(base) / len(base)
            c["seed_spread"] = rounded(math.sqrt(sum((v - mean) ** 2 for v in base) / (len(base) - 1)))
        spreads = [max(v) - min(v) for v in margins.values() if len(v) > 1 and all(math.isfinite(x) for x in v)]
        if spreads:
            c["perturbation_spread"] = rounded(max(spreads))
        # Fragile: another verdict under a perturbation, or a decided verdict whose smallest
        # margin is inside what the perturbations moved a margin by (another machine may flip it).
        # Perturbations that moved no margin at all make nothing fragile (an exact claim's margin
        # of 0, bit for bit under every perturbation, is not inside a spread of 0).
        c["fragile_by"] = ("verdict" if any(p["verdict"] != c["verdict"] for p in c["perturbed"]) else
                           "margin" if c["verdict"] in ("holds", "does not hold") and base and spreads and
                           c["perturbation_spread"] > 0 and min(abs(v) for v in base) <= c["perturbation_spread"]
                           else "")
        c["fragile"] = bool(c["fragile_by"])
    return claims


def build(experiment, runs, claims, evaluated, seed_of, without_seed, perturbed=()):
    summary = {"schema": SCHEMA, "experiment": experiment, "environment": environment(runs),
               "tolerance": {k: list(v) for k, v in TOLERANCE.items()},
               "runs": run_entries(runs, seed_of, without_seed), "claims": claim_entries(claims, evaluated)}
    if perturbed:
        summary["perturbations"] = [{"label": label, "environment": env} for label, env, _ in perturbed]
        perturb(summary["claims"], [(label, cl) for label, _, cl in perturbed])
    return summary


def write(path, summary):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=1, sort_keys=False)
        fh.write("\n")


def load(path):
    with open(path) as fh:
        s = json.load(fh)
    if s.get("schema") != SCHEMA:
        raise ValueError(f"{path}: summary schema {s.get('schema')} (this cachelab reads {SCHEMA})")
    return s


def within(metric, old, new):
    """(ok, tolerance text) for one metric's committed and fresh value."""
    kind, amount = TOLERANCE[metric]
    old, new = float(old), float(new)
    if math.isinf(old) or math.isinf(new) or math.isnan(old) or math.isnan(new):
        return (old == new) or (math.isnan(old) and math.isnan(new)), "exact"
    if kind == "abs":
        return abs(new - old) <= amount, f"±{amount:g}"
    return abs(new - old) <= amount * max(abs(old), 1e-12), f"±{amount * 100:g}%"


def compare(committed, fresh):
    """Each number of the fresh summary beside its committed value and each verdict beside the
    committed one. Returns (lines, result) where result counts what reproduced."""
    lines, rows = [], []
    env_c, env_f = committed["environment"], fresh["environment"]
    lines.append(f"committed: git {env_c.get('git_sha')}, {env_c.get('threads')} thread(s), cpu {env_c.get('cpu', '?')}")
    lines.append(f"now:       git {env_f.get('git_sha')}, {env_f.get('threads')} thread(s), cpu {env_f.get('cpu', '?')}")
    lines.append(f"{'run':<34} {'metric':<15} {'committed':>10} {'now':>10} {'diff':>9}  {'tolerance':<9}")
    numbers = moved = 0
    for name, c in committed["runs"].items():
        f = fresh["runs"].get(name)
        if f is None:
            lines.append(f"{name:<34} missing in the fresh run")
            rows.append({"run": name, "status": "missing"})
            moved += 1
            continue
        if c["run_id"] != f["run_id"]:
            lines.append(f"{name:<34} (config or inputs differ: run id {c['run_id']} committed, {f['run_id']} now)")
        for metric in TOLERANCE:
            if metric not in c["metrics"] or metric not in f["metrics"]:
                continue
            old, new = float(c["metrics"][metric]), float(f["metrics"][metric])
            ok, tol = within(metric, old, new)
            numbers += 1
            moved += not ok
            diff = new - old if math.isfinite(new - old) else float("nan")
            lines.append(f"{name:<34} {metric:<15} {old:>10.4g} {new:>10.4g} {diff:>+9.3g}  {tol:<9} "
                         f"{'ok' if ok else 'MOVED'}")
            rows.append({"run": name, "metric": metric, "committed": rounded(old), "now": rounded(new), "ok": ok})
    verdicts = []
    for c in committed["claims"]:
        f = next((x for x in fresh["claims"] if x["text"] == c["text"]), None)
        now = verdict_text(f) if f else "missing"
        same = f is not None and f["verdict"] == c["verdict"]
        verdicts.append({"claim": c["text"], "committed": verdict_text(c), "now": now, "same": same})
        lines.append(f"claim: {c['text']}\n  committed: {verdict_text(c)}\n  now:       {now}"
                     f"{'' if same else '   VERDICT CHANGED'}")
    same = sum(v["same"] for v in verdicts)
    lines.append(f"reproduced: {numbers - moved} of {numbers} numbers within tolerance, "
                 f"{same} of {len(verdicts)} verdicts")
    result = {"experiment": committed["experiment"], "committed_environment": env_c, "environment": env_f,
              "numbers": numbers, "numbers_within": numbers - moved, "verdicts": verdicts, "rows": rows}
    return lines, result
