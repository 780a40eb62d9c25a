#!/usr/bin/python3
"""Report of one experiment folder: reads only its HDF5 files, writes report/index.html + PNGs.

usage: /usr/bin/python3 tools/report.py results/<experiment> [--claims-only]
"""
import html
import json
import math
import os
import sys

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DECISIONS = ["compute", "reuse", "predict", "skipped"]
DECISION_COLORS = ["#2b6cb0", "#f6ad55", "#68d391", "#e2e8f0"]
TABLE_KEYS = ["speedup_flops", "speedup_wall", "psnr", "ssim", "mse", "fid", "fid_ref", "accuracy", "token_match",
              "reuse_fraction", "final_err_rel_l1", "wall_s"]
OPS = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def current_run_ids(folder):
    """The run ids index.csv lists (the experiment as it is now), or None without an index."""
    path = os.path.join(folder, "index.csv")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return {line.split(",", 1)[0] for line in fh.read().splitlines()[1:] if line}


def load_runs(folder):
    """Run files by variant name (a done run wins over a failed one). Files of runs from an
    earlier version of the experiment (not in index.csv) are left out."""
    runs = {}
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
        run = {"file": name, "attrs": attrs, "h5": f,
               "summary": {k: float(v) for k, v in f["summary"].attrs.items()} if "summary" in f else {}}
        variant = reference_label(attrs) if is_ref(run) else attrs.get("variant", name)
        old = runs.get(variant)
        if old is None or (old["attrs"].get("status") != "done" and attrs.get("status") == "done"):
            runs[variant] = run
    refs = [n for n in runs if is_ref(runs[n])]
    if len(refs) == 1:  # the usual case: one reference, named plainly (claims say `reference`)
        runs["reference"] = runs.pop(refs[0])
    return runs


def is_ref(run):
    return bool(int(run["attrs"].get("is_reference", 0)))


def reference_label(attrs):
    """`reference[<sweep point>]` from the overrides `(reference of <first run using it>)`."""
    of = attrs.get("overrides", "").removeprefix("(reference of ").removesuffix(")")
    point = of[of.index("[") + 1:-1] if "[" in of and of.endswith("]") else of
    return f"reference[{point}]"


def load_experiment(folder):
    path = os.path.join(folder, ".experiment.h5")
    if not os.path.exists(path):
        return {"experiment": os.path.basename(folder.rstrip("/")), "variants": [], "claims": []}
    with h5py.File(path, "r") as f:
        return {"experiment": text(f.attrs.get("experiment", "")),
                "variants": [text(v) for v in f.attrs.get("variants", [])],
                "claims": json.loads(text(f.attrs.get("claims_json", "[]")))}


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.4g}"


def spread(run, metric, value):
    """(low, high) of a metric measured with a spread (its _q25/_q75), else (value, value)."""
    if run is None:
        return value, value
    s = run["summary"]
    if metric + "_q25" in s and metric + "_q75" in s:
        return s[metric + "_q25"], s[metric + "_q75"]
    return value, value


def evaluate_claims(claims, runs):
    """Each claim -> (verdict, sentence); verdict in holds / does not hold / inconclusive / cannot be evaluated."""
    out = []
    for c in claims:
        metric, op, left = c.get("metric"), c.get("op"), c.get("left")
        label = c.get("text") or f"{metric}({left}) {op} " + (f"{metric}({c['right']})" if "right" in c else fmt(c.get("value")))

        def side(variant):
            run = runs.get(variant)
            if run is None:
                return None, f"no run of `{variant}`"
            if run["attrs"].get("status") != "done":
                return None, f"`{variant}` {run['attrs'].get('status')}"
            if metric not in run["summary"]:
                return None, f"`{variant}` has no metric `{metric}`"
            return run["summary"][metric], None

        lv, err = side(left)
        if "right" in c:
            rv, err2 = side(c["right"])
            rlabel = f"{metric}({c['right']})"
        else:
            rv, err2, rlabel = float(c.get("value")), None, "value"
        err = err or err2
        if err or op not in OPS:
            out.append(("cannot be evaluated", label, f"cannot be evaluated: {err or 'unknown op ' + str(op)}"))
            continue
        verdict = "holds" if OPS[op](lv, rv) else "does not hold"
        # A measured quantity with a spread (speedup_wall: interquartile range of interleaved
        # repetitions) decides only when the ranges do not overlap.
        lo_l, hi_l = spread(runs.get(left), metric, lv)
        lo_r, hi_r = spread(runs.get(c.get("right")), metric, rv) if "right" in c else (rv, rv)
        if (lo_l, hi_l, lo_r, hi_r) != (lv, lv, rv, rv):
            if OPS[op](lo_l, hi_r) and OPS[op](hi_l, lo_r):
                verdict = "holds"
            elif not OPS[op](hi_l, lo_r) and not OPS[op](lo_l, hi_r):
                verdict = "does not hold"
            else:
                verdict = "inconclusive"
        rng = f" [{fmt(lo_l)}, {fmt(hi_l)}]" if (lo_l, hi_l) != (lv, lv) else ""
        out.append((verdict, label, f"{metric}({left}) = {fmt(lv)}{rng} {op} {rlabel} = {fmt(rv)}: {verdict}"))
    return out


def ordered(runs, exp):
    names = [n for n in runs if is_ref(runs[n])]
    names += [v for v in exp["variants"] if v in runs and not is_ref(runs[v])]
    names += [v for v in runs if v not in names]
    return names


def plot_speed_quality(runs, names, path):
    metrics = [m for m in ("psnr", "fid") if any(m in runs[n]["summary"] for n in names)]
    if not metrics:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for i, n in enumerate(names):
            s = runs[n]["summary"]
            if m not in s or not math.isfinite(s[m]):
                continue
            color = f"C{i % 10}"
            sf, sw = s.get("speedup_flops", 1.0), s.get("speedup_wall", 1.0)
            ax.plot([sf, sw], [s[m], s[m]], color=color, lw=0.8)
            ax.scatter([sf], [s[m]], color=color, s=40, label=n)
            ax.scatter([sw], [s[m]], facecolors="none", edgecolors=color, s=40)
            ax.annotate(n, (sf, s[m]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("speedup vs reference (filled: FLOPs, hollow: wall clock)")
        ax.set_ylabel(m.upper() + (" (dB, vs reference samples)" if m == "psnr" else " (lower is better)"))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def site_names(run):
    return [text(n) for n in run["h5"]["sites/names"][:]]


def plot_drift(run, path):
    f = run["h5"]
    names = site_names(run)
    rel = f["sites/drift_rel_l1"][:]
    cos = 1.0 - f["sites/drift_cos"][:]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.22 * len(names) + 2))
    for ax, data, title in ((axes[0], rel, "relative L1 change vs previous step"),
                            (axes[1], cos, "1 - cosine similarity vs previous step")):
        d = np.ma.masked_invalid(data.T)
        im = ax.imshow(d, aspect="auto", cmap="magma", interpolation="nearest",
                       norm=matplotlib.colors.LogNorm(vmin=max(np.nanmin(data[data > 0]) if np.any(data > 0) else 1e-6, 1e-6),
                                                      vmax=max(np.nanmax(data), 1e-5)) if np.any(data > 0) else None)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels(names, fontsize=6)
        ax.set_xlabel("sampling step")
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_decisions(runs, names, path):
    shown = [n for n in names if not is_ref(runs[n]) and "sites/decision" in runs[n]["h5"]]
    if not shown:
        return False
    cmap = matplotlib.colors.ListedColormap(DECISION_COLORS)
    sites = site_names(runs[shown[0]])
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, (0.16 * len(sites) + 0.8) * len(shown) + 0.6), squeeze=False)
    for ax, n in zip(axes[:, 0], shown):
        dec = runs[n]["h5"]["sites/decision"][:]
        ax.imshow(dec.T, aspect="auto", cmap=cmap, vmin=-0.5, vmax=3.5, interpolation="nearest")
        ax.set_yticks(range(len(sites)))
        ax.set_yticklabels(sites, fontsize=5)
        ax.set_title(n, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("sampling step")
    handles = [matplotlib.patches.Patch(color=c, label=l) for c, l in zip(DECISION_COLORS, DECISIONS)]
    fig.legend(handles=handles, loc="upper right", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_errors(runs, names, path):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for i, n in enumerate(names):
        if is_ref(runs[n]):
            continue
        e = runs[n]["h5"]["steps/err_ref_rel_l1"][:]
        if len(e) and np.any(e > 0):
            ax.plot(np.arange(len(e)), np.where(e > 0, e, np.nan), label=n, color=f"C{i % 10}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_yscale("log")
    ax.set_xlabel("sampling step")
    ax.set_ylabel("relative L1 distance of x_t to the reference")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def sample_strip(x):
    """Images [N, C, H, W] side by side (channel 0), or the first video's frames [N, F, C, H, W];
    None for samples that are no pictures (token ids [N, L])."""
    if x.ndim == 4:
        return np.concatenate([img[0] for img in x], axis=1) if len(x) else np.zeros((8, 8))
    if x.ndim == 5 and len(x):
        return np.concatenate([frame[0] for frame in x[0]], axis=1)
    return None


def plot_samples(runs, names, path, count=8):
    rows = []
    if not any(is_ref(runs[n]) for n in names):  # the reference file is absent: use a copy
        ref = next((runs[n] for n in names if "samples/reference" in runs[n]["h5"]), None)
        if ref is not None:
            rows.append(("reference", ref["h5"]["samples/reference"][:count]))
    rows += [(n, runs[n]["h5"]["samples/x"][:count]) for n in names if "samples/x" in runs[n]["h5"]]
    rows = [(n, strip) for n, strip in ((n, sample_strip(x)) for n, x in rows) if strip is not None]
    if not rows:
        return False
    fig, axes = plt.subplots(len(rows), 1, figsize=(count * 0.9 + 1.5, 1.0 * len(rows) + 0.3), squeeze=False)
    for ax, (n, strip) in zip(axes[:, 0], rows):
        ax.imshow(strip, cmap="gray", vmin=-1, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(n, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def table_html(runs, names):
    keys = [k for k in TABLE_KEYS if any(k in runs[n]["summary"] for n in names)]
    head = "".join(f"<th>{k}</th>" for k in ["variant", "status"] + keys)
    rows = []
    for n in names:
        a, s = runs[n]["attrs"], runs[n]["summary"]
        status = a.get("status", "?")
        if status == "failed":
            status = f"failed at step {a.get('failed_step')}: {html.escape(str(a.get('error', '')))}"
        cells = "".join(f"<td>{fmt(s.get(k))}</td>" for k in keys)
        rows.append(f"<tr><td>{html.escape(n)}</td><td>{status}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    folder = argv[1].rstrip("/")
    runs, exp = load_runs(folder), load_experiment(folder)
    claims = evaluate_claims(exp["claims"], runs)
    for verdict, label, sentence in claims:
        print(f"claim: {label}\n  {sentence}")
    if "--claims-only" in argv:
        return check_status(claims, argv)
    if not runs:
        print(f"no run files in {folder}", file=sys.stderr)
        return 1
    out = os.path.join(folder, "report")
    os.makedirs(out, exist_ok=True)
    names = ordered(runs, exp)
    any_run = runs[names[0]]["attrs"]
    figures = []
    if plot_speed_quality(runs, names, os.path.join(out, "speed_quality.png")):
        figures.append(("Speed vs quality", "speed_quality.png",
                        "Each variant at its FLOPs speedup (filled) and wall-clock speedup (hollow), both measured "
                        "against the uncached reference; PSNR against the reference samples, FID against the real data."))
    first_ref = next((runs[n] for n in names if is_ref(runs[n])), None)
    if first_ref is not None and "sites/drift_rel_l1" in first_ref["h5"]:
        plot_drift(first_ref, os.path.join(out, "drift.png"))
        figures.append(("Feature drift of the reference", "drift.png",
                        "How much each site's output moves from one step to the next in the uncached run: where "
                        "it moves little, a cache loses little."))
    if plot_decisions(runs, names, os.path.join(out, "decisions.png")):
        figures.append(("Cache decisions", "decisions.png", "Per step and site: computed, reused, predicted, or skipped "
                        "because an enclosing site was not computed."))
    if plot_errors(runs, names, os.path.join(out, "errors.png")):
        figures.append(("Error vs step", "errors.png", "Relative L1 distance of each variant's sample to the "
                        "reference sample after every step."))
    if plot_samples(runs, names, os.path.join(out, "samples.png")):
        figures.append(("Samples", "samples.png", "Final samples for the same seeds and classes: the reference row, "
                        "then each variant."))
    claim_rows = "".join(
        f"<li class='{'ok' if v == 'holds' else 'no' if v == 'does not hold' else 'na'}'><b>{html.escape(label)}</b>"
        f"<br>{html.escape(sentence)}</li>" for v, label, sentence in claims) or "<li>(no claims stated)</li>"
    context = " | ".join(f"{k}: {html.escape(str(any_run.get(k, '?')))}"
                         for k in ("git_sha", "host", "threads", "blas", "torch_version", "created_utc"))
    body = "".join(f"<h2>{t}</h2><p class='cap'>{c}</p><img src='{p}'>" for t, p, c in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>cachelab: {html.escape(exp['experiment'])}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}} img{{max-width:100%}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}} .cap{{color:#555;font-size:13px}} .ctx{{color:#666;font-size:12px}}
li.ok{{color:#276749}} li.no{{color:#c53030}} li.na{{color:#975a16}} li{{margin-bottom:.5em}}</style></head><body>
<h1>{html.escape(exp['experiment'])}</h1><p class="ctx">{context}</p>{timing_note(runs, names)}
<h2>Claims</h2><ul>{claim_rows}</ul>
<h2>Results</h2>{table_html(runs, names)}
{body}</body></html>"""
    with open(os.path.join(out, "index.html"), "w") as fh:
        fh.write(page)
    print(f"report: {os.path.join(out, 'index.html')}")
    return check_status(claims, argv)


def timing_note(runs, names):
    """Warnings about how wall-clock speedups were measured."""
    notes = []
    if any(runs[n]["summary"].get("timing_shared_cores", 0) for n in names):
        notes.append("These runs were made by several worker processes at once (--jobs): their wall-clock "
                     "timings shared the cores.")
    sus = [n for n in names if runs[n]["summary"].get("speedup_wall_suspect", 0)]
    if sus:
        notes.append("Wall-clock speedup above the FLOPs speedup (suspect unless explained, e.g. int8 "
                     "multiply-adds are cheaper than fp32 ones): " + ", ".join(html.escape(n) for n in sus) + ".")
    return "".join(f"<p class='cap'><b>Note:</b> {t}</p>" for t in notes)


def check_status(claims, argv):
    """With --check: 1 unless every claim holds (CI can gate on the claims)."""
    if "--check" not in argv:
        return 0
    bad = [label for v, label, _ in claims if v != "holds"]
    for label in bad:
        print(f"check: not holding: {label}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
