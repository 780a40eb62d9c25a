"""Claims of an experiment judged on its runs: a side names one run or a variant across seeds
(mean and spread); two variants over the same seeds are compared seed by seed. Used by
report.py (the report, --check, --summary)."""
import math
import re

import numpy as np

import summary

OPS = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


SEED_KEYS = ("seed=", "calibration.seed=")


def without_seed(name):
    """A run name without the `seed=` and `calibration.seed=` entries of its sweep point (as
    framework/experiment.cpp): `fora_n2[seed=1]` -> `fora_n2`, `fora[cache.interval=2,seed=1]`
    -> `fora[cache.interval=2]`, `ptq[calibration.seed=8,seed=1]` -> `ptq`."""
    bracket = "[" in name and name.endswith("]")
    head, point = (name[:name.index("[")], name[name.index("[") + 1:-1]) if bracket else ("", name)
    kept = ",".join(item for item in point.split(",") if not item.startswith(SEED_KEYS))
    if not bracket:
        return kept
    return f"{head}[{kept}]" if kept else head


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.4g}"


def members(runs, name):
    """The runs a claim or group name stands for: the run of that exact name, else every run
    that differs from it only in its seed."""
    if name in runs:
        return [name]
    return [n for n in runs if without_seed(n) == name]


def aggregate(runs, names, metric):
    """A metric over runs (the seeds of a variant): dict(mean, lo, hi, n) or None when no
    done run has it. One run: its value and its own spread (metric_q25 / _q75, e.g. the
    interleaved timing repetitions of speedup_wall). Several: the mean, and the wider of one
    standard deviation across seeds and the mean of the runs' own quartiles."""
    vals, q25, q75 = [], [], []
    for n in names:
        s = runs[n]["summary"]
        if runs[n]["attrs"].get("status") != "done" or metric not in s:
            continue
        vals.append(s[metric])
        q25.append(s.get(metric + "_q25", s[metric]))
        q75.append(s.get(metric + "_q75", s[metric]))
    if not vals:
        return None
    v = np.array(vals, dtype=float)
    if len(v) == 1 or not np.all(np.isfinite(v)):
        return {"mean": float(v.mean()), "lo": float(np.min(q25)), "hi": float(np.max(q75)), "n": len(v), "values": vals}
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    return {"mean": mean, "lo": min(mean - sd, float(np.mean(q25))), "hi": max(mean + sd, float(np.mean(q75))),
            "n": len(v), "values": vals}


def seed_of(runs, name):
    """A run's seed: its `seed` attribute, else the `seed=N` of its name (None if neither), with
    `/c<N>` for the `calibration.seed=N` of its name (runs are paired on both)."""
    m = re.search(r"(?<![.\w])seed=(-?\d+)", name)
    seed = str(runs[name]["attrs"]["seed"]) if "seed" in runs[name]["attrs"] else m.group(1) if m else None
    c = re.search(r"calibration\.seed=(-?\d+)", name)
    return seed if seed is None or not c else f"{seed}/c{c.group(1)}"


def paired(runs, left, right, metric, op, scale=1.0):
    """Two variants over the same seeds, a metric without per-run spread: the claim is judged
    seed by seed (the same noise on both sides; the right side times `scale`): (verdict, wins,
    n), or None when not paired."""
    lv = {seed_of(runs, n): runs[n]["summary"][metric] for n in left}
    rv = {seed_of(runs, n): scale * runs[n]["summary"][metric] for n in right}
    if len(left) < 2 or None in lv or None in rv or len(lv) != len(left) or len(rv) != len(right):
        return None
    # A side that fits nothing is not swept over calibration seeds: each of its seeds stands
    # beside every calibration seed of the other side.
    plain = lambda d: all("/c" not in k for k in d)
    if plain(rv) and not plain(lv) and {k.split("/c")[0] for k in lv} == set(rv):
        rv = {k: rv[k.split("/c")[0]] for k in lv}
    elif plain(lv) and not plain(rv) and {k.split("/c")[0] for k in rv} == set(lv):
        lv = {k: lv[k.split("/c")[0]] for k in rv}
    if set(lv) != set(rv):
        return None
    if any(metric + "_q25" in runs[n]["summary"] for n in left + right):
        return None
    wins = sum(bool(OPS[op](lv[k], rv[k])) for k in lv)
    verdict = "holds" if wins == len(lv) else "does not hold" if wins == 0 else "inconclusive"
    return verdict, wins, len(lv), {k: lv[k] - rv[k] for k in sorted(lv)}


def evaluate_claims(claims, runs):
    """Each claim -> (verdict, label, sentence, detail); verdict in holds / does not hold /
    inconclusive / cannot be evaluated; detail: for a claim judged seed by seed `wins`, `n` and
    the per-seed `margins` (left - right), else the margin of the means. A side names one run or a variant across seeds (mean and spread). Two
    variants over the same seeds are compared seed by seed: the claim holds when it holds on every
    seed, does not hold when it fails on every seed, else is inconclusive. Otherwise, with a spread
    on either side, the claim decides only when the ranges do not overlap."""
    out = []
    for c in claims:
        metric, op, left = c.get("metric"), c.get("op"), c.get("left")
        scale = float(c.get("scale", 1.0))
        rname = (f"{fmt(scale)} x " if scale != 1.0 else "") + f"{metric}({c.get('right')})"
        label = c.get("text") or f"{metric}({left}) {op} " + (rname if "right" in c else fmt(c.get("value")))

        def side(variant):
            names = members(runs, variant)
            if not names:
                return None, f"no run of `{variant}`"
            bad = [n for n in names if runs[n]["attrs"].get("status") != "done"]
            if bad:
                return None, f"`{bad[0]}` {runs[bad[0]]['attrs'].get('status')}"
            a = aggregate(runs, names, metric)
            if a is None:
                return None, f"`{variant}` has no metric `{metric}`"
            a["names"] = names
            a["calibrated"] = any("calibration.seed=" in n for n in names)
            return a, None

        lv, err = side(left)
        if "right" in c:
            rv, err2 = side(c["right"])
            if rv is not None and scale != 1.0:
                rv = dict(rv, **{k: rv[k] * scale for k in ("mean", "lo", "hi")})
            rlabel = rname
        else:
            value = float(c.get("value"))
            rv, err2, rlabel = {"mean": value, "lo": value, "hi": value, "n": 0}, None, "value"
        err = err or err2
        if err or op not in OPS:
            out.append(("cannot be evaluated", label, f"cannot be evaluated: {err or 'unknown op ' + str(op)}", {}))
            continue
        verdict = "holds" if OPS[op](lv["mean"], rv["mean"]) else "does not hold"
        if (lv["lo"], lv["hi"], rv["lo"], rv["hi"]) != (lv["mean"], lv["mean"], rv["mean"], rv["mean"]):
            if OPS[op](lv["lo"], rv["hi"]) and OPS[op](lv["hi"], rv["lo"]):
                verdict = "holds"
            elif not OPS[op](lv["hi"], rv["lo"]) and not OPS[op](lv["lo"], rv["hi"]):
                verdict = "does not hold"
            else:
                verdict = "inconclusive"
        how, detail = "", {"margins": finite({"mean": lv["mean"] - rv["mean"]})}
        if "right" in c and (p := paired(runs, lv["names"], rv["names"], metric, op, scale)):
            verdict, wins, n, margins = p
            how = (f" (paired by seed and calibration seed: {wins} of {n} pairs)" if any("/c" in k for k in margins)
                   else f" (paired by seed: {wins} of {n} seeds)")
            detail = {"wins": wins, "n": n, "margins": finite(margins)}
        here = f"{metric}({left}) = {describe(lv)} {op} {rlabel} = {describe(rv)}: {verdict}{how}"
        out.append((verdict, label, f"paper: {c['paper']} / here: {here}" if c.get("paper") else here, detail))
    return out


def finite(margins):
    """The finite margins, rounded (PSNR is inf where a variant equals its reference)."""
    return {str(k): summary.rounded(v) for k, v in margins.items() if math.isfinite(v)}


def describe(a):
    """`30.1 [29.5, 30.7] (mean of 3 seeds)`, `2.0 [1.9, 2.1]`, or a plain value."""
    s = fmt(a["mean"])
    if (a["lo"], a["hi"]) != (a["mean"], a["mean"]):
        s += f" [{fmt(a['lo'])}, {fmt(a['hi'])}]"
    if a.get("n", 1) > 1:
        s += f" (mean of {a['n']} {'runs' if a.get('calibrated') else 'seeds'})"
    return s
