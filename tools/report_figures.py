"""Figures of the experiment report (tools/report.py). Each function draws one PNG from the
loaded runs and returns whether it drew anything. Sizes are bounded: every figure stays
under ~1,600 px tall and keeps axis labels at 7 pt or more (readable at 110 dpi)."""
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DECISIONS = ["compute", "reuse", "predict", "skipped", "partial", "blend"]
DECISION_COLORS = ["#2b6cb0", "#f6ad55", "#68d391", "#e2e8f0", "#b794f4", "#f687b3"]
DPI = 110
MAX_HEIGHT_IN = 14.0  # ~1,540 px at DPI
LABEL_PT = 8
# One colour family per method: variants of one method get shades of it, so a sweep
# reads as a few methods rather than many unrelated colours.
FAMILIES = ["Blues", "Oranges", "Greens", "Purples", "Reds", "Greys", "YlOrBr", "PuRd", "BuGn"]
MARKERS = ["o", "s", "D", "^", "v", "P", "X", "*", "h"]


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


class Style:
    """Colour and marker of every variant group: the hue names the method, the shade and
    marker the variant within it. The reference is black."""

    def __init__(self, groups, method_of):
        self.color, self.marker = {}, {}
        methods = []
        for g in groups:
            if method_of[g] not in methods and method_of[g] != "reference":
                methods.append(method_of[g])
        for mi, m in enumerate(methods):
            members = [g for g in groups if method_of[g] == m]
            cmap = plt.get_cmap(FAMILIES[mi % len(FAMILIES)])
            for j, g in enumerate(members):
                shade = 0.85 if len(members) == 1 else 0.95 - 0.5 * j / (len(members) - 1)
                self.color[g] = cmap(shade)
                self.marker[g] = MARKERS[j % len(MARKERS)]
        for g in groups:
            self.color.setdefault(g, "black")
            self.marker.setdefault(g, "o")


def overlapping_texts(fig):
    """Pairs of drawn, non-empty texts (tick labels, titles, axis and legend labels) whose
    boxes overlap by more than 1 px."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks, drawn = set(), []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update((id(tick.label1), id(tick.label2)))
            for tick in axis._update_ticks():  # only the ticks inside the view are drawn
                drawn += [tick.label1, tick.label2]
    texts = drawn + [t for t in fig.findobj(matplotlib.text.Text) if id(t) not in ticks]
    boxes = []
    for t in texts:
        if not t.get_visible() or not t.get_text().strip() or t.figure is None:
            continue
        bb = t.get_window_extent(renderer)
        if bb.width > 0 and bb.height > 0:
            boxes.append((t.get_text(), bb.padded(-1.0)))
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:] if ba.overlaps(bb)]


def save(fig, path):
    w, h = fig.get_size_inches()
    assert h <= MAX_HEIGHT_IN + 0.01, f"figure {path} is {h:.1f} in tall"
    if os.environ.get("CACHELAB_REPORT_STRICT"):  # tests: labels must not overlap
        clash = overlapping_texts(fig)
        assert not clash, f"{os.path.basename(path)}: overlapping labels {clash[:5]}"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def tick_step(count, height_in, pt=LABEL_PT):
    """Label every k-th row so that labels of `pt` points do not overlap in `height_in` inches."""
    per_label_in = pt * 1.25 / 72
    return max(1, math.ceil(count * per_label_in / max(height_in, 0.1)))


def set_row_labels(ax, names, height_in):
    k = tick_step(len(names), height_in)
    idx = list(range(0, len(names), k))
    ax.set_yticks(idx)
    ax.set_yticklabels([names[i] for i in idx], fontsize=LABEL_PT)
    return k


def pareto_front(points, higher_quality_better):
    """Indices of the non-dominated points (speedup up, quality up or down) among
    (speedup, quality) pairs, in order of speedup."""
    front = []
    for i, (s, q) in enumerate(points):
        dominated = False
        for j, (s2, q2) in enumerate(points):
            if j == i:
                continue
            better_q = q2 >= q if higher_quality_better else q2 <= q
            strictly = s2 > s or (q2 > q if higher_quality_better else q2 < q)
            if s2 >= s and better_q and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_speed_quality(agg, groups, style, path):
    """Speed vs quality per variant group: mean over seeds with error bars (one standard
    deviation across seeds), the Pareto front over the FLOPs speedup marked. PSNR inf
    (identical to the reference) is drawn at the top edge with an upward triangle."""
    metrics = [m for m in ("psnr", "fid", "ssim", "accuracy", "exact_match", "token_match")
               if any(agg[g].get(m) for g in groups)][:2]
    shown = [g for g in groups if agg[g].get("speedup_flops")]
    if not metrics or not shown:
        return False
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.2 * len(metrics) + 2.5, 4.6), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        pts, names = [], []
        finite = [v for g in shown if agg[g].get(m) for v in (agg[g][m]["lo"], agg[g][m]["mean"], agg[g][m]["hi"])
                  if math.isfinite(v)]
        top = (max(finite) + 0.08 * (max(finite) - min(finite) + 1.0)) if finite else 1.0
        inf_drawn = False
        for g in shown:
            q = agg[g].get(m)
            if q is None:
                continue
            sf, sw = agg[g]["speedup_flops"], agg[g].get("speedup_wall")
            y = q["mean"]
            if math.isinf(y):
                ax.scatter([sf["mean"]], [top], marker="^", s=70, color=style.color[g], edgecolors="black",
                           linewidths=0.6, zorder=3, label=f"{g} (n={q['n']}): {m.upper()} {figs_fmt(y)}")
                inf_drawn = True
                pts.append((sf["mean"], math.inf if y > 0 else -math.inf))
                names.append(g)
                continue
            if math.isnan(y):
                continue
            ax.errorbar([sf["mean"]], [y], xerr=[[sf["mean"] - sf["lo"]], [sf["hi"] - sf["mean"]]],
                        yerr=[[y - q["lo"]], [q["hi"] - y]], fmt=style.marker[g], color=style.color[g],
                        mec="black", mew=0.5, ms=7, capsize=2, label=f"{g} (n={q['n']})", zorder=3)
            if sw is not None and math.isfinite(sw["mean"]):
                ax.errorbar([sw["mean"]], [y], xerr=[[sw["mean"] - sw["lo"]], [sw["hi"] - sw["mean"]]],
                            fmt=style.marker[g], mfc="none", color=style.color[g], ms=7, capsize=2, zorder=2)
                ax.plot([sf["mean"], sw["mean"]], [y, y], color=style.color[g], lw=0.7, alpha=0.7)
            pts.append((sf["mean"], y))
            names.append(g)
        higher = m != "fid"
        front = pareto_front(pts, higher)
        fx = [pts[i][0] for i in front]
        fy = [top if math.isinf(pts[i][1]) else pts[i][1] for i in front]
        if len(front) > 1:
            ax.step(fx, fy, where="pre", color="black", ls="--", lw=0.9, zorder=1,
                    label="Pareto front (FLOPs)")
        ax.scatter(fx, fy, s=190, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4,
                   label=None if len(front) > 1 else "Pareto front (FLOPs)")
        if inf_drawn:
            ax.axhline(top, color="grey", lw=0.5, ls=":")
            ax.scatter([], [], marker="^", color="grey", label=f"{m.upper()} = inf (identical to the reference)")
        ax.set_xlabel("speedup vs reference (filled: FLOPs, hollow: wall clock)")
        ax.set_ylabel({"psnr": "PSNR (dB, vs reference samples)", "fid": "FID (lower is better)"}.get(m, m))
        ax.grid(alpha=0.3)
        for tl in ax.get_xticklabels() + ax.get_yticklabels():
            tl.set_fontsize(LABEL_PT)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    axes[0, -1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LABEL_PT,
                       frameon=False)
    save(fig, path)
    return True


def figs_fmt(v):
    return ("inf" if v > 0 else "-inf") if math.isinf(v) else f"{v:.4g}"


def plot_step_cost(series, groups, path):
    """Per-step wall time (ms) and FLOPs per variant group (mean over seeds), as two heat maps
    (rows the variants, columns the steps): a per-step line per variant overlaps into noise
    once caches alternate cheap and full steps."""
    shown = [g for g in groups if "wall_ms" in series[g] or "flops" in series[g]]
    if not shown:
        return False
    steps = max(len(series[g].get("wall_ms", series[g].get("flops"))) for g in shown)
    height = min((MAX_HEIGHT_IN - 1.5) / 2, 0.28 * len(shown) + 0.6)
    fig, axes = plt.subplots(2, 1, figsize=(12, 2 * height + 1.5), sharex=True, gridspec_kw={"hspace": 0.3})
    for ax, key, label, scale in ((axes[0], "wall_ms", "wall time per step (ms, all batches)", 1.0),
                                  (axes[1], "flops", "FLOPs per step (GFLOP, all batches)", 1e9)):
        data = np.full((len(shown), steps), np.nan)
        for i, g in enumerate(shown):
            if key in series[g]:
                data[i, :len(series[g][key])] = series[g][key] / scale
        cmap = plt.get_cmap("viridis").copy()
        cmap.set_bad("#cbd5e0")
        im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=cmap, vmin=0, interpolation="nearest")
        set_row_labels(ax, shown, height)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        ax.set_title(label, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=LABEL_PT)
    axes[1].set_xlabel("sampling step")
    save(fig, path)
    return True


def plot_over_time(over_time, groups, style, path):
    """AR video: per generated frame, PSNR against the ground truth (inf drawn as a gap) and
    the identity share, one line per variant group."""
    if not groups:
        return False
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"hspace": 0.15})
    for ax, key, label in ((axes[0], "psnr_gt", "PSNR vs ground truth (dB)"), (axes[1], "identity", "identity kept")):
        for g in groups:
            if key in over_time[g]:
                frames, values = over_time[g][key]
                ax.plot(frames, np.where(np.isfinite(values), values, np.nan), color=style.color[g], lw=1.2, label=g)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_xlabel("frame")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LABEL_PT, frameon=False)
    save(fig, path)
    return True


def plot_errors(series, groups, style, path):
    """Relative L1 distance of x_t to the reference per step (log axis): mean over seeds,
    band from the lowest to the highest seed. Zeros (identical to the reference), which a log
    axis cannot show, are drawn as open circles on the bottom edge."""
    shown = [g for g in groups if "err" in series[g]]
    if not shown:
        return False
    pos = [v for g in shown for v in series[g]["err"].ravel() if np.isfinite(v) and v > 0]
    floor = min(pos) / 3 if pos else 1e-8
    fig, ax = plt.subplots(figsize=(10, 4.6))
    zeros = False
    for g in shown:
        e = series[g]["err"]  # [seeds, T]
        mean = np.nanmean(e, axis=0)
        x = np.arange(mean.shape[0])
        ax.plot(x, np.where(mean > 0, mean, np.nan), color=style.color[g], lw=1.2, label=g)
        if e.shape[0] > 1:
            lo, hi = np.nanmin(e, axis=0), np.nanmax(e, axis=0)
            ax.fill_between(x, np.where(lo > 0, lo, floor), np.where(hi > 0, hi, floor), color=style.color[g],
                            alpha=0.15, lw=0)
        z = np.isfinite(mean) & (mean == 0)
        if z.any():
            zeros = True
            ax.scatter(x[z], np.full(z.sum(), floor), marker="o", facecolors="none", edgecolors=style.color[g], s=18,
                       clip_on=False, zorder=3)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor * 0.9)
    if zeros:
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="grey", label="0 (identical), on the axis floor")
    ax.set_xlabel("sampling step")
    ax.set_ylabel("relative L1 distance of x_t to the reference")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=LABEL_PT, frameon=False)
    save(fig, path)
    return True


def log_norm(data):
    pos = data[np.isfinite(data) & (data > 0)]
    if not pos.size:
        return None
    lo, hi = float(pos.min()), float(pos.max())
    return matplotlib.colors.LogNorm(vmin=lo, vmax=max(hi, lo * 1.0001))


def heat_cmap(name="magma"):
    cmap = plt.get_cmap(name).copy()
    cmap.set_under("#ffffff")  # exact zeros: white (a log scale has no place for them)
    cmap.set_bad("#cbd5e0")    # NaN: never computed or not measured
    return cmap


def plot_site_error(site_err, sites, groups, path):
    """Per-site error vs reference: rows the sites, columns the variant groups, colour the
    mean over steps (and seeds) of the site output's relative L1 distance to the reference."""
    shown = [g for g in groups if g in site_err]
    if not shown or not sites:
        return False
    data = np.stack([site_err[g] for g in shown], axis=1)  # [P, G]
    height = min(MAX_HEIGHT_IN - 1.8, 0.2 * len(sites) + 1.0)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(shown) + 4.0), height + 1.8))
    norm = log_norm(data)
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap=heat_cmap(), norm=norm, interpolation="nearest")
    set_row_labels(ax, sites, height)
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels(shown, rotation=40, ha="right", fontsize=LABEL_PT)
    if norm is not None:
        cb = fig.colorbar(im, ax=ax, fraction=0.04)
        cb.set_label("mean relative L1 distance to the reference (log; white = 0)", fontsize=LABEL_PT)
    save(fig, path)
    return True


def plot_heat_pair(names, panels, path):
    """Two step x site heat maps side by side: panels = [(data [T, S], title), ...]."""
    height = min(MAX_HEIGHT_IN - 1.0, 0.2 * len(names) + 1.0)
    fig, axes = plt.subplots(1, 2, figsize=(14, height + 1.0), constrained_layout=True)
    for ax, (data, title) in zip(axes, panels):
        norm = log_norm(data)
        im = ax.imshow(np.ma.masked_invalid(data.T), aspect="auto", cmap=heat_cmap(), norm=norm,
                       interpolation="nearest")
        set_row_labels(ax, names, height)
        ax.set_xlabel("sampling step")
        ax.set_title(title, fontsize=9)
        if norm is not None:
            fig.colorbar(im, ax=ax, fraction=0.04)
    save(fig, path)


def plot_drift(names, rel, cos, path):
    """The reference's feature drift: per step and site, how much the output moves."""
    plot_heat_pair(names, [(rel, "relative L1 change vs previous step"),
                           (1.0 - cos, "1 - cosine similarity vs previous step")], path)


def plot_error_budget(agg, groups, method, style, path, metric="psnr"):
    """Error vs budget: per method family with at least two settings, its variants joined in
    order of FLOPs speedup, quality with its spread over seeds. None when no family has two."""
    families = {}
    for g in groups:
        a = agg.get(g) or {}
        if not a.get("speedup_flops") or not a.get(metric):
            continue
        families.setdefault(method[g], []).append(g)
    # A curve needs settings at different budgets (equal-budget comparisons have none).
    families = {m: gs for m, gs in families.items()
                if len({round(agg[g]["speedup_flops"]["mean"], 2) for g in gs}) >= 2}
    if not families:
        return False
    fig, ax = plt.subplots(figsize=(9, 5.5), constrained_layout=True)
    for m, gs in families.items():
        gs = sorted(gs, key=lambda g: agg[g]["speedup_flops"]["mean"])
        x = [agg[g]["speedup_flops"]["mean"] for g in gs]
        top = [99.0 if not np.isfinite(agg[g][metric]["mean"]) else agg[g][metric]["mean"] for g in gs]
        lo = [t - agg[g][metric]["lo"] if np.isfinite(agg[g][metric]["lo"]) else 0.0 for t, g in zip(top, gs)]
        hi = [agg[g][metric]["hi"] - t if np.isfinite(agg[g][metric]["hi"]) else 0.0 for t, g in zip(top, gs)]
        ax.errorbar(x, top, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], color=style.color[gs[-1]], marker="o",
                    capsize=3, label=m)
    ax.set_xlabel("FLOPs speedup (the budget: higher = fewer FLOPs)")
    ax.set_ylabel(metric.upper() + (" (dB)" if metric == "psnr" else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    save(fig, path)
    return True


def plot_profile(names, reuse_output, reuse_site, lag, path):
    """A profile's reuse error: per step and site, the model output's (left) and the site's
    own (right) relative L2 error when that site alone reuses its output from `lag` steps before."""
    plot_heat_pair(names, [(reuse_output, f"model output error, reuse from {lag} step(s) before"),
                           (reuse_site, f"site output error, reuse from {lag} step(s) before")], path)


def plot_decisions(rasters, sites, path, max_panels=10):
    """Cache decisions per step and site, one panel per variant group (its first seed), at
    most `max_panels`; the whole figure stays under MAX_HEIGHT_IN."""
    shown = list(rasters.items())[:max_panels]
    if not shown:
        return False
    panel = min(2.6, (MAX_HEIGHT_IN - 1.0) / len(shown))
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, panel * len(shown) + 0.8), squeeze=False, sharex=True,
                             gridspec_kw={"hspace": 0.35})
    cmap = matplotlib.colors.ListedColormap(DECISION_COLORS)
    for ax, (g, dec) in zip(axes[:, 0], shown):
        ax.imshow(dec.T, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(DECISIONS) - 0.5, interpolation="nearest")
        set_row_labels(ax, sites, panel - 0.35)
        ax.set_title(g, fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=LABEL_PT)
    axes[-1, 0].set_xlabel("sampling step")
    used = sorted({int(v) for _, d in shown for v in np.unique(d) if int(v) < len(DECISIONS)})
    handles = [matplotlib.patches.Patch(color=DECISION_COLORS[i], label=DECISIONS[i]) for i in used]
    axes[0, 0].legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.02), ncol=len(handles),
                      fontsize=LABEL_PT, frameon=False)
    save(fig, path)
    return True


def plot_signals(signals, style, path):
    """Threshold policies: the decision signal per step against the threshold, one panel
    per variant group (first seed); filled markers where the site was computed."""
    if not signals:
        return False
    n = len(signals)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, min(3.0 * rows, MAX_HEIGHT_IN - 0.5)), squeeze=False)
    for ax, (g, s) in zip(axes.ravel(), signals.items()):
        x = np.arange(len(s["signal"]))
        ok = np.isfinite(s["signal"])
        computed = ok & (s["decision"] == 0)
        ax.plot(x[ok], s["signal"][ok], color=style.color[g], lw=1)
        ax.scatter(x[computed], s["signal"][computed], color=style.color[g], s=14, zorder=3, label="computed")
        ax.scatter(x[ok & ~computed], s["signal"][ok & ~computed], facecolors="none", edgecolors=style.color[g],
                   s=14, zorder=3, label="reused")
        ax.axhline(s["threshold"], color="black", ls="--", lw=0.9, label=f"threshold {s['threshold']:g}")
        ax.set_title(f"{g}  ({s['site']})", fontsize=9, loc="left")
        ax.set_xlabel("sampling step", fontsize=LABEL_PT)
        ax.set_ylabel("signal", fontsize=LABEL_PT)
        ax.tick_params(labelsize=LABEL_PT)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    save(fig, path)
    return True


def sample_strip(x):
    """Images [N, C, H, W] side by side (channel 0), or the first video's frames [N, F, C, H, W];
    None for samples that are no pictures (token ids [N, L])."""
    if x.ndim == 4:
        return np.concatenate([img[0] for img in x], axis=1) if len(x) else None
    if x.ndim == 5 and len(x):
        return np.concatenate([frame[0] for frame in x[0]], axis=1)
    return None


def plot_strips(rows, path, diff=False):
    """Rows of sample strips (name, [H, W*N]); with diff, signed differences on a shared
    symmetric scale with a colour bar."""
    rows = [(n, s) for n, s in rows if s is not None][:12]
    if not rows:
        return False
    width = rows[0][1].shape[1] / rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), 1, figsize=(min(16, 0.9 * width + 2.5), 1.0 * len(rows) + 0.5),
                             squeeze=False)
    vmax = max(float(np.nanmax(np.abs(s))) for _, s in rows) if diff else 1.0
    vmax = vmax if vmax > 0 else 1.0
    im = None
    for ax, (n, strip) in zip(axes[:, 0], rows):
        im = ax.imshow(strip, cmap="RdBu_r" if diff else "gray", vmin=-vmax if diff else -1, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(n, rotation=0, ha="right", va="center", fontsize=LABEL_PT)
    if diff:
        cb = fig.colorbar(im, ax=axes[:, 0].tolist(), fraction=0.03, pad=0.01)
        cb.set_label("variant - reference", fontsize=LABEL_PT)
    save(fig, path)
    return True
