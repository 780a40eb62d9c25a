#!/usr/bin/python3
"""Report of one experiment folder: reads only its HDF5 files, writes report/index.html + PNGs.

usage: /usr/bin/python3 tools/report.py results/<experiment> [--claims-only] [--check]
           [--summary FILE] [--compare FILE] [--perturbed [LABEL=]DIR ...]

With a sweep over `seed`, runs that differ only in their seed form one variant group
(`fora_n2[seed=0]`, `fora_n2[seed=1]` -> `fora_n2`): claims, the table and the figures
use the group's mean and its spread across seeds.
"""
import glob
import html
import json
import math
import re
import os
import sys

import h5py
import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_figures as figs  # noqa: E402
import summary  # noqa: E402
from claims import (OPS, aggregate, describe, evaluate_claims, finite, fmt, members, paired, seed_of,  # noqa: E402,F401
                    without_seed)

TABLE_KEYS = ["speedup_flops", "speedup_wall", "psnr", "ssim", "mse", "fid", "fid_ref", "accuracy", "token_match",
              "exact_match", "tokens_per_s", "forwards", "reuse_fraction", "final_err_rel_l1", "wall_s"]
FID_MIN_SAMPLES = 1000  # below this, FID is dominated by its small-sample bias


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def current_run_ids(folder):
    """The run ids index.csv lists (the experiment as it is now), or None without an index."""
    path = os.path.join(folder, "index.csv")
    if not os.path.exists(path):
        return None
    with open(path) as fh:  # a dict keeps the index's order (the experiment's)
        return {line.split(",", 1)[0]: i for i, line in enumerate(fh.read().splitlines()[1:]) if line}


def load_runs(folder):
    """Run files by run name (a done run wins over a failed one). Files of runs from an
    earlier version of the experiment (not in index.csv) are left out."""
    runs, loaded = {}, []
    current = current_run_ids(folder)
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".h5") or name.startswith("."):
            continue
        if current is not None and name[:-3] not in current:
            continue
        try:
            f = h5py.File(os.path.join(folder, name), "r")
        except OSError:
            continue
        attrs = {k: (text(v) if isinstance(v, (bytes, str)) else v) for k, v in f.attrs.items()}
        run = {"file": name, "attrs": attrs, "h5": f, "order": current.get(name[:-3], 0) if current else 0,
               "summary": {k: float(v) for k, v in f["summary"].attrs.items()} if "summary" in f else {}}
        try:
            run["config"] = yaml.safe_load(attrs.get("config_yaml", "")) or {}
        except yaml.YAMLError:
            run["config"] = {}
        loaded.append(run)
    # References are named by their sweep point; where two share a point (variants that
    # differ in the pipeline each have their own), by the first run using each instead.
    points = [reference_label(r["attrs"]) for r in loaded if is_ref(r)]
    for run in loaded:
        attrs = run["attrs"]
        if is_ref(run):
            variant = reference_label(attrs)
            if points.count(variant) > 1:
                variant = reference_label(attrs, full=True)
        else:
            variant = attrs.get("variant", run["file"])
        old = runs.get(variant)
        if old is None or (old["attrs"].get("status") != "done" and attrs.get("status") == "done"):
            runs[variant] = run
    refs = [n for n in runs if is_ref(runs[n])]
    if len(refs) == 1:  # the usual case: one reference, named plainly (claims say `reference`)
        runs["reference"] = runs.pop(refs[0])
    return runs


def is_ref(run):
    return bool(int(run["attrs"].get("is_reference", 0)))


def reference_label(attrs, full=False):
    """`reference[<sweep point>]` from the overrides `(reference of <first run using it>)`;
    full: `reference[<that run>]`."""
    of = attrs.get("overrides", "").removeprefix("(reference of ").removesuffix(")")
    point = of[of.index("[") + 1:-1] if "[" in of and of.endswith("]") and not full else of
    return f"reference[{point}]"


def method_of(run):
    """What a variant does, for colour families: its cache type, else its ops layer type."""
    if is_ref(run):
        return "reference"
    cache = (run.get("config") or {}).get("cache") or {}
    if cache.get("type", "none") != "none":
        return str(cache["type"])
    ops = (run.get("config") or {}).get("ops")
    if isinstance(ops, dict) and ops.get("type"):
        return str(ops["type"])
    if isinstance(ops, list) and ops and isinstance(ops[0], dict):
        return str(ops[0].get("type", "ops"))
    return "none"


def load_experiment(folder):
    path = os.path.join(folder, ".experiment.h5")
    if not os.path.exists(path):
        return {"experiment": os.path.basename(folder.rstrip("/")), "variants": [], "claims": []}
    with h5py.File(path, "r") as f:
        return {"experiment": text(f.attrs.get("experiment", "")),
                "variants": [text(v) for v in f.attrs.get("variants", [])],
                "claims": json.loads(text(f.attrs.get("claims_json", "[]")))}


def ordered(runs, exp):
    """Run names in experiment order: as index.csv lists them, else references first, then
    the variants as the experiment file names them."""
    if any(r["order"] for r in runs.values()):
        return sorted(runs, key=lambda n: runs[n]["order"])
    names = [n for n in runs if is_ref(runs[n])]
    names += [v for v in exp["variants"] if v in runs and not is_ref(runs[v])]
    names += [v for v in runs if v not in names]
    return names


def group_names(runs, names):
    """Variant groups (run names without their seed) in experiment order -> member runs."""
    groups = {}
    for n in names:
        groups.setdefault(without_seed(n) or n, []).append(n)
    return groups


def done(runs, names):
    return [n for n in names if runs[n]["attrs"].get("status") == "done"]


def stack(runs, names, dataset):
    """The dataset of each done run, stacked over runs when the shapes agree, else None."""
    arrs = [runs[n]["h5"][dataset][:] for n in done(runs, names) if dataset in runs[n]["h5"]]
    if not arrs or any(a.shape != arrs[0].shape for a in arrs):
        return None
    return np.stack(arrs).astype(float)


def frame_series(summary, key):
    """The per-frame values `key_fNNN` of a summary as (frames, values), or None."""
    pts = sorted((int(k[len(key) + 2:]), v) for k, v in summary.items()
                 if k.startswith(key + "_f") and k[len(key) + 2:].isdigit())
    if not pts:
        return None
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)


def build_figures(runs, names, groups, out):
    """Every figure of the report: [(title, png, caption)]."""
    method = {g: method_of(runs[m[0]]) for g, m in groups.items()}
    style = figs.Style(list(groups), method)
    variants = [g for g in groups if not is_ref(runs[groups[g][0]]) and done(runs, groups[g])]
    agg = {g: {k: aggregate(runs, groups[g], k) for k in ("speedup_flops", "speedup_wall", "psnr", "fid", "ssim",
                                                          "accuracy", "exact_match", "token_match")} for g in variants}
    series = {}
    for g, m in groups.items():
        s = {}
        for key, ds in (("wall_ms", "steps/wall_ms"), ("flops", "steps/flops"), ("err", "steps/err_ref_rel_l1")):
            a = stack(runs, m, ds)
            if a is not None:
                s[key] = a if key == "err" else np.nanmean(a, axis=0)
        series[g] = s
    figures = []

    def add(ok, title, png, caption):
        if ok:
            figures.append((title, png, caption))

    add(figs.plot_speed_quality(agg, variants, style, os.path.join(out, "speed_quality.png")),
        "Speed vs quality", "speed_quality.png",
        "Each variant at its FLOPs speedup (filled) and wall-clock speedup (hollow) against the uncached reference; "
        "with several seeds the mean, error bars one standard deviation across seeds (n = seeds). Circled points "
        "and the dashed line: the Pareto front over FLOPs speedup and quality. Colour families group the methods.")
    add(figs.plot_error_budget(agg, variants, method, style, os.path.join(out, "error_budget.png")),
        "Error vs budget", "error_budget.png",
        "Each method with several settings: PSNR against FLOPs speedup, its settings joined in order of speedup; "
        "mean over seeds, error bars one standard deviation (n = seeds). PSNR inf (identical samples) at the top.")
    add(figs.plot_step_cost(series, [g for g in groups if done(runs, groups[g])], os.path.join(out, "step_cost.png")),
        "Cost per step", "step_cost.png", "Wall time and analytic FLOPs of each sampling step, per variant (mean "
        "over seeds); grey where a run has no such step.")
    add(figs.plot_errors(series, variants, style, os.path.join(out, "errors.png")),
        "Error vs step", "errors.png", "Relative L1 distance of each variant's sample x_t to the reference's after "
        "every step: mean over seeds, shaded from the lowest to the highest seed.")
    over_time = {}  # AR video (video_quality per_frame: true): per-frame values, mean over seeds
    for g in groups:
        for key in ("psnr_gt", "identity"):
            per = [frame_series(runs[n]["summary"], key) for n in done(runs, groups[g])]
            per = [p for p in per if p is not None]
            if per and all(np.array_equal(p[0], per[0][0]) for p in per):
                over_time.setdefault(g, {})[key] = (per[0][0], np.nanmean(np.stack([p[1] for p in per]), axis=0))
    add(figs.plot_over_time(over_time, [g for g in groups if g in over_time], style, os.path.join(out, "over_time.png")),
        "Quality over time", "over_time.png", "AR video: each generated frame's PSNR against the ground truth and the "
        "share of samples whose digit the judge still classifies as in the first frame, per variant (mean over seeds).")
    first = {g: done(runs, groups[g])[0] for g in groups if done(runs, groups[g])}
    sites = figs_sites(runs, first)
    site_err = {}
    for g in variants:
        a = stack(runs, groups[g], "sites/err_ref_rel_l1")
        if a is not None and sites and a.shape[-1] == len(sites):
            with np.errstate(all="ignore"):
                site_err[g] = np.nanmean(np.nanmean(a, axis=1), axis=0) if np.isfinite(a).any() else a[0, 0] * np.nan
    add(figs.plot_site_error(site_err, sites, variants, os.path.join(out, "site_error.png")),
        "Per-site error vs reference", "site_error.png",
        "Mean over steps (and seeds) of each site output's relative L1 distance to the reference run's output at "
        "the same step and site (measured on the probe samples). White: exactly 0; grey: never measured.")
    ref = next((runs[first[g]] for g in groups if is_ref(runs[groups[g][0]]) and g in first), None)
    if ref is not None and "sites/drift_rel_l1" in ref["h5"]:
        figs.plot_drift(figs_site_names(ref), ref["h5"]["sites/drift_rel_l1"][:], ref["h5"]["sites/drift_cos"][:],
                        os.path.join(out, "drift.png"))
        add(True, "Feature drift of the reference", "drift.png",
            "How much each site's output moves from one step to the next in the uncached run: where it moves little, "
            "a cache loses little. White: exactly 0; grey: not measured (step 0).")
    for pf in sorted(glob.glob(os.path.join(out, os.pardir, "profiles", "*.h5")))[:2]:
        try:
            with h5py.File(pf, "r") as h:
                names_p = [text(n) for n in h["sites/name"][:]]
                lag = min(1, h["reuse/output_rel_l2"].shape[2] - 1)
                png = "profile_" + os.path.splitext(os.path.basename(pf))[0] + ".png"
                figs.plot_profile(names_p, h["reuse/output_rel_l2"][:, :, lag], h["reuse/site_rel_l2"][:, :, lag], lag,
                                  os.path.join(out, png))
        except (OSError, KeyError) as e:
            print(f"report: skipping profile {pf}: {e}", file=sys.stderr)
            continue
        add(True, f"Profile: reuse error ({os.path.basename(pf)})", png,
            "From `cachelab profile` (profiles/ beside the run files): per step and site, the error the model output "
            "(left) and the site itself (right) would have if that site alone reused its output from the step "
            "before. Dark: safe to cache.")
    rasters = {g: runs[first[g]]["h5"]["sites/decision"][:] for g in variants
               if "sites/decision" in runs[first[g]]["h5"] and runs[first[g]]["h5"]["sites/decision"].shape[1] == len(sites)}
    add(figs.plot_decisions(rasters, sites, os.path.join(out, "decisions.png")),
        "Cache decisions", "decisions.png", "Per step and site (first seed of each variant, at most 10 variants): "
        "computed, reused, predicted, or skipped because an enclosing site was not computed.")
    add(figs.plot_signals(threshold_signals(runs, first, variants), style, os.path.join(out, "signals.png")),
        "Threshold policies: signal vs threshold", "signals.png",
        "For each variant whose policy compares a signal with a threshold (first seed): the signal per step at the "
        "site that decides, and the threshold; filled where the site was computed, open where the cache was used.")
    strips, diffs = sample_rows(runs, first, groups)
    add(figs.plot_strips(strips, os.path.join(out, "samples.png")), "Samples", "samples.png",
        "Final samples for the same seeds and classes (first seed of each variant): the reference row, then each "
        "variant.")
    add(figs.plot_strips(diffs, os.path.join(out, "differences.png"), diff=True), "Difference to the reference",
        "differences.png", "Each variant's final samples minus the reference's (same seeds and classes), on one "
        "symmetric colour scale: red above, blue below, white equal.")
    return figures


def figs_site_names(run):
    return [text(n) for n in run["h5"]["sites/names"][:]]


def figs_sites(runs, first):
    for n in first.values():
        if "sites/names" in runs[n]["h5"]:
            return figs_site_names(runs[n])
    return []


def threshold_signals(runs, first, variants):
    """{group: {signal [T], decision [T], threshold, site}} for variants whose cache has a
    `threshold` key: the site whose signal is logged most often."""
    out = {}
    for g in variants:
        run = runs[first[g]]
        threshold = ((run.get("config") or {}).get("cache") or {}).get("threshold")
        if not isinstance(threshold, (int, float)) or "sites/signal" not in run["h5"]:
            continue
        sig = run["h5"]["sites/signal"][:]
        counts = np.isfinite(sig).sum(axis=0)
        if not counts.any():
            continue
        p = int(np.argmax(counts))
        out[g] = {"signal": sig[:, p], "decision": run["h5"]["sites/decision"][:, p], "threshold": float(threshold),
                  "site": figs_site_names(run)[p]}
    return out


def sample_rows(runs, first, groups):
    """(sample strips, difference strips): the reference, then each variant's first seed."""
    strips, diffs = [], []
    ref_done = False
    for g, n in first.items():
        h5 = runs[n]["h5"]
        if is_ref(runs[n]):
            if not ref_done and "samples/x" in h5:
                strips.append((g, figs.sample_strip(h5["samples/x"][:8])))
                ref_done = True
            continue
        if "samples/x" not in h5:
            continue
        x = h5["samples/x"][:8]
        if not ref_done and "samples/reference" in h5:  # the reference file is absent: use its copy
            strips.insert(0, ("reference", figs.sample_strip(h5["samples/reference"][:8])))
            ref_done = True
        strips.append((g, figs.sample_strip(x)))
        if "samples/reference" in h5 and h5["samples/reference"].shape[0] >= x.shape[0]:
            r = h5["samples/reference"][:x.shape[0]]
            if r.shape == x.shape:
                diffs.append((g, figs.sample_strip(x - r)))
    return strips, diffs


def cell(a, std=True):
    if a is None:
        return "-"
    if a["n"] > 1 and std and all(math.isfinite(v) for v in a["values"]):
        return f"{fmt(a['mean'])} &plusmn; {fmt(float(np.std(a['values'], ddof=1)))}"
    if a["n"] > 1 and not all(math.isfinite(v) for v in a["values"]):  # e.g. PSNR inf for some seeds
        return " / ".join(fmt(v) for v in a["values"])
    return fmt(a["mean"])


def aggregate_table(runs, groups):
    """One row per variant group: seeds, status count, every metric as mean ± std across seeds."""
    keys = [k for k in TABLE_KEYS if any(k in runs[n]["summary"] for m in groups.values() for n in m)]
    head = "".join(f"<th>{k}</th>" for k in ["variant", "method", "runs"] + keys)
    rows = []
    for g, m in groups.items():
        ok = done(runs, m)
        status = f"{len(ok)} done" + (f", {len(m) - len(ok)} not" if len(ok) < len(m) else "")
        cells = "".join(f"<td>{cell(aggregate(runs, m, k))}</td>" for k in keys)
        rows.append(f"<tr><td>{html.escape(g)}</td><td>{html.escape(method_of(runs[m[0]]))}</td>"
                    f"<td>{status}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def table_html(runs, names):
    keys = [k for k in TABLE_KEYS if any(k in runs[n]["summary"] for n in names)]
    head = "".join(f"<th>{k}</th>" for k in ["run", "status"] + keys)
    rows = []
    for n in names:
        a, s = runs[n]["attrs"], runs[n]["summary"]
        status = html.escape(str(a.get("status", "?")))
        if status == "failed":
            status = f"failed at step {a.get('failed_step')}: {html.escape(str(a.get('error', '')))}"
        cells = "".join(f"<td>{fmt(s.get(k))}</td>" for k in keys)
        rows.append(f"<tr><td>{html.escape(n)}</td><td>{status}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def settings_html(runs, names):
    """The run settings in the header: samples, steps, guidance, model and its weights digest
    (every distinct value when runs differ)."""
    def values(get, missing="?"):
        seen = []
        for n in names:
            try:
                v = get(runs[n])
            except (KeyError, TypeError, AttributeError):
                v = None
            if v is not None and v not in seen:
                seen.append(v)
        return ", ".join(str(v) for v in seen) or missing

    cfg = lambda r: r.get("config") or {}  # noqa: E731
    items = [
        ("samples", values(lambda r: cfg(r)["run"]["samples"])),
        ("sampler", values(lambda r: f"{cfg(r)['sampler']['type']}, {cfg(r)['sampler']['steps']} steps")),
        ("guidance scale", values(lambda r: cfg(r)["run"]["cfg_scale"])),
        ("seeds", values(lambda r: int(r["attrs"]["seed"]))),
        ("model", values(lambda r: f"{cfg(r)['backbone']['type']} ({cfg(r)['backbone'].get('weights') or 'random'})")),
        ("weights digest", values(lambda r: weights_digest(r), "not recorded (run files before input_files)")),
    ]
    return " | ".join(f"{k}: <b>{html.escape(v)}</b>" for k, v in items)


def weights_digest(run):
    """The digest of the backbone weights the run read (its `input_files` attr), else None."""
    weights = ((run.get("config") or {}).get("backbone") or {}).get("weights")
    for item in str(run["attrs"].get("input_files", "")).split(";"):
        path, _, digest = item.rpartition("=")
        if weights and path == weights:
            return digest
    return None


def warnings_html(runs, names):
    notes = []
    fid = [n for n in names if "fid" in runs[n]["summary"]]
    small = sorted({int(((runs[n].get("config") or {}).get("run") or {}).get("samples", 0)) for n in fid})
    if small and small[0] < FID_MIN_SAMPLES:
        notes.append(f"FID is computed on {', '.join(str(s) for s in small)} samples, fewer than "
                     f"{FID_MIN_SAMPLES:,}: at this size it is dominated by its small-sample bias; compare FID "
                     "values only between runs of the same sample count.")
    if any(runs[n]["summary"].get("timing_shared_cores", 0) for n in names):
        notes.append("These runs were made by several worker processes at once (--jobs): their wall-clock "
                     "timings shared the cores.")
    sus = [n for n in names if runs[n]["summary"].get("speedup_wall_suspect", 0)]
    if sus:
        notes.append("Wall-clock speedup above the FLOPs speedup (suspect unless explained, e.g. int8 "
                     "multiply-adds are cheaper than fp32 ones): " + ", ".join(html.escape(n) for n in sus) + ".")
    warned = sorted({str(runs[n]["attrs"].get("warnings")) for n in names if runs[n]["attrs"].get("warnings")})
    notes += [html.escape(w) for w in warned]
    return "".join(f"<p class='warn'><b>Warning:</b> {t}</p>" for t in notes)


def artefacts_html(runs, names):
    """What the runs read that was made on demand (calibration files, schedules, routers): which
    run made each, with which seed and samples, in how long (the run files' `artefacts` attribute)."""
    made = {}
    for n in names:
        try:
            items = json.loads(str(runs[n]["attrs"].get("artefacts") or "[]"))
        except ValueError:
            continue
        for a in items:
            made.setdefault(a.get("path"), a)
    if not made:
        return ""
    cells = lambda a: [a.get("path"), a.get("name"), a.get("maker"), a.get("seed", "?"), a.get("samples", "?"),
                       f"{float(a['seconds']):.1f}" if "seconds" in a else "?"]  # noqa: E731
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells(a)) + "</tr>"
                   for _, a in sorted(made.items()))
    total = sum(float(a.get("seconds", 0)) for a in made.values())
    return (f"<details><summary>Artefacts made on demand ({len(made)}, {total:.0f} s)</summary><table>"
            "<tr><th>artefact</th><th>what it is</th><th>made by run</th><th>seed</th>"
            f"<th>samples</th><th>seconds</th></tr>{rows}</table></details>")


def parse_args(argv):
    import argparse
    p = argparse.ArgumentParser(prog="cachelab report", description=__doc__.split("\n")[0])
    p.add_argument("folder")
    p.add_argument("--check", action="store_true", help="exit 1 unless every claim holds")
    p.add_argument("--claims-only", action="store_true", help="print the claims, write no report")
    p.add_argument("--summary", metavar="FILE", help="write the experiment's summary (docs/summaries/<name>.json)")
    p.add_argument("--compare", metavar="FILE", help="print every number and verdict beside a committed summary; "
                   "exit 1 when a verdict changed")
    p.add_argument("--perturbed", metavar="[LABEL=]DIR", action="append", default=[],
                   help="the same experiment run under a perturbation (another thread count, BLAS kernel path, "
                   "calibration seed): claims whose verdict changes there are fragile (repeatable)")
    return p.parse_args(argv[1:])


def perturbed_claims(exp, spec):
    """(label, environment, claim entries) of one perturbed copy of the experiment."""
    label, _, folder = spec.rpartition("=") if "=" in spec else ("", "", spec)
    folder = folder.rstrip("/")
    label = label or os.path.basename(os.path.dirname(os.path.abspath(folder)))
    runs, other = load_runs(folder), load_experiment(folder)
    if other["experiment"] != exp["experiment"] or [c.get("text") for c in other["claims"]] != \
            [c.get("text") for c in exp["claims"]]:
        raise SystemExit(f"error: {folder} holds experiment `{other['experiment']}` with other claims; "
                         f"--perturbed needs a run of `{exp['experiment']}` as it is")
    return label, summary.environment(runs), summary.claim_entries(exp["claims"], evaluate_claims(other["claims"], runs))


def main(argv):
    args = parse_args(argv)
    folder = args.folder.rstrip("/")
    runs, exp = load_runs(folder), load_experiment(folder)
    claims = evaluate_claims(exp["claims"], runs)
    perturbed = [perturbed_claims(exp, p) for p in args.perturbed]
    summ = summary.build(exp["experiment"], runs, exp["claims"], claims, seed_of, without_seed, perturbed)
    for c in summ["claims"]:
        print(f"claim: {c['text']}\n  {c['sentence']}")
        if c.get("perturbed"):
            print(f"  {summary.verdict_text(c)}" + (
                f" (margin spread: seeds {c['seed_spread']:.3g}, perturbations {c['perturbation_spread']:.3g})"
                if "seed_spread" in c and "perturbation_spread" in c else ""))
    status = check_status(claims, args.check)
    if args.summary:
        summary.write(args.summary, summ)
        print(f"summary: {args.summary}")
    if args.compare:
        lines, result = summary.compare(summary.load(args.compare), summ)
        print("\n".join(lines))
        os.makedirs(os.path.join(folder, "report"), exist_ok=True)
        summary.write(os.path.join(folder, "report", "compare.json"), result)
        print(f"comparison: {os.path.join(folder, 'report', 'compare.json')}")
        status = max(status, 0 if all(v["same"] for v in result["verdicts"]) else 1)
    if args.claims_only:
        return status
    if not runs:
        print(f"no run files in {folder}", file=sys.stderr)
        return 1
    out = os.path.join(folder, "report")
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):  # figures of an earlier report that this one may not draw
        if old.endswith(".png"):
            os.remove(os.path.join(out, old))
    names = ordered(runs, exp)
    groups = group_names(runs, names)
    figures = build_figures(runs, names, groups, out)
    any_run = runs[names[0]]["attrs"]
    claim_rows = "".join(
        f"<li class='{'ok' if v == 'holds' else 'no' if v == 'does not hold' else 'na'}'><b>{html.escape(label)}</b>"
        f"<br>{html.escape(sentence)}{fragility_html(c)}</li>"
        for (v, label, sentence, _), c in zip(claims, summ["claims"])) or "<li>(no claims stated)</li>"
    context = " | ".join(f"{k}: {html.escape(str(any_run.get(k, '?')))}"
                         for k in ("git_sha", "host", "cpu", "threads", "blas", "torch_version", "created_utc"))
    body = "".join(f"<h2>{t}</h2><p class='cap'>{c}</p><img src='{p}' alt='{html.escape(t)}'>"
                   for t, p, c in figures)
    per_run = (f"<details><summary>Every run ({len(names)})</summary>{table_html(runs, names)}</details>"
               if len(names) > len(groups) else "")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>cachelab: {html.escape(exp['experiment'])}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222}} img{{max-width:100%}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}} .cap{{color:#555;font-size:13px}} .ctx{{color:#666;font-size:12px}}
.warn{{background:#fffaf0;border-left:4px solid #dd6b20;padding:4px 8px;font-size:13px}}
li.ok{{color:#276749}} li.no{{color:#c53030}} li.na{{color:#975a16}} li{{margin-bottom:.5em}}</style></head><body>
<h1>{html.escape(exp['experiment'])}</h1><p>{settings_html(runs, names)}</p><p class="ctx">{context}</p>
{warnings_html(runs, names)}
<h2>Claims</h2><ul>{claim_rows}</ul>
<h2>Results per variant</h2><p class='cap'>Mean &plusmn; standard deviation across seeds where a variant ran with
several seeds.</p>{aggregate_table(runs, groups)}{per_run}{artefacts_html(runs, names)}
{body}</body></html>"""
    with open(os.path.join(out, "index.html"), "w") as fh:
        fh.write(page)
    print(f"report: {os.path.join(out, 'index.html')}")
    return status


def fragility_html(c):
    """Under the claim: its verdict under each perturbation and the spreads, when run with --perturbed."""
    if not c.get("perturbed"):
        return ""
    spread = (f"; per-seed margin spread across perturbations {fmt(c['perturbation_spread'])} vs "
              f"{fmt(c['seed_spread'])} across seeds" if "seed_spread" in c and "perturbation_spread" in c else "")
    return f"<br><i>{html.escape(summary.verdict_text(c))}{spread}</i>"


def check_status(claims, check):
    """With --check: 1 unless every claim holds (CI can gate on the claims)."""
    if not check:
        return 0
    bad = [label for v, label, _, _ in claims if v != "holds"]
    for label in bad:
        print(f"check: not holding: {label}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
