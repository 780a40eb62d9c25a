#!/usr/bin/python3
"""The docs' generated parts, and the checks that keep every page honest.

usage: /usr/bin/python3 tools/docs.py [--check] [--cachelab build/cachelab] [--page docs/X.md ...]

Numbers in the docs are never typed: a block

    <!-- generated: KIND ARGS -->
    ...
    <!-- end generated -->

is rewritten from the committed summaries (docs/summaries/<experiment>.json, written by
`cachelab report results/EXP --summary`) or from the components themselves. Kinds:

  table EXP.yaml [EXP2.yaml ...] [metrics=a,b] [variants=x,y]
                                                mean (± std across seeds) per variant; with
                                                several files variants are `name/variant`
  claims EXP.yaml                               each claim of the experiment and its verdict
  environment EXP.yaml                          where and at which commit its runs were made
  verdicts [EXP.yaml ...]                       every claim of these experiments (of every summary)
  reproduction                                  the last re-check of every summary (docs/reproduction/*.json)
  tolerances                                    how far a re-run may move each metric (tools/summary.py)
  config-reference                              `cachelab list --markdown`
  current-configs                               the summaries whose runs' ids (configs) differ from
                                                what their experiment files give now
  bench FILE.json [section=TEXT]                 figures of `cachelab_bench --json FILE.json` (the rows
                                                whose section contains TEXT)
  routers WEIGHTS.safetensors ...               what a router's training recorded in its file:
                                                recipe, lambda, skipped share, held-out image

Without --check the blocks are rewritten in place. With --check nothing is written and the
exit status is 1 when a block is stale, a relative link or its #anchor does not resolve, or
a command in a ```bash block names a subcommand, option, experiment or file that does not
exist or a config override that `cachelab validate` refuses.
"""
import argparse
import glob
import json
import math
import os
import re
import shlex
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import summary as summaries  # noqa: E402

BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)
DEFAULT_METRICS = ["speedup_flops", "speedup_wall", "psnr", "ssim", "fid", "accuracy"]
HEADERS = {"speedup_flops": "FLOPs x", "speedup_wall": "wall x", "psnr": "PSNR (dB)", "ssim": "SSIM", "fid": "FID",
           "accuracy": "agreement", "accuracy_worst_class": "worst class", "mse": "MSE", "reuse_fraction": "reused", "token_match": "token match",
           "exact_match": "exact match", "identity": "identity", "identity_last": "identity (last 16)",
           "identity_label": "identity vs label", "psnr_gt": "PSNR vs truth", "psnr_gt_last": "PSNR vs truth (last 16)",
           "psnr_ref_last": "PSNR vs ref (last 16)", "kv_peak_bytes": "peak K/V", "frames_per_s": "frames/s",
           "ref_frames_per_s": "ref frames/s",
           "final_err_rel_l1": "final rel. L1", "wall_over_flops": "wall / FLOPs", "speedup_wall_iqr": "wall x quartiles"}


def metric_value(r, metric):
    """A run's metric, or a derived one: wall_over_flops (speedup_wall / speedup_flops),
    speedup_wall_iqr (the interleaved repetitions' quartiles, as text)."""
    m = r["metrics"]
    if metric == "wall_over_flops" and "speedup_wall" in m and "speedup_flops" in m:
        return m["speedup_wall"] / m["speedup_flops"]
    if metric == "speedup_wall_iqr" and "speedup_wall_q25" in m and "speedup_wall_q75" in m:
        return f"{m['speedup_wall_q25']:.2f}-{m['speedup_wall_q75']:.2f}"
    return m.get(metric)


def pages():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def rel(path):
    return os.path.relpath(path, ROOT)


# ---- generated blocks ---------------------------------------------------------------------

def experiment_name(exp_file):
    path = os.path.join(ROOT, exp_file)
    if not os.path.exists(path):
        raise ValueError(f"experiment `{exp_file}` does not exist")
    with open(path) as fh:
        doc = yaml.safe_load(fh) or {}
    return str(doc.get("name") or os.path.splitext(os.path.basename(exp_file))[0])


def summary_of(exp_file):
    name = experiment_name(exp_file)
    path = os.path.join(ROOT, "docs", "summaries", name + ".json")
    if not os.path.exists(path):
        raise ValueError(f"no committed summary for `{exp_file}` ({rel(path)}); make it with "
                         f"`build/cachelab run {exp_file}` and `build/cachelab report results/{name} --summary {rel(path)}`")
    return summaries.load(path)


def fmt_metric(metric, v):
    if isinstance(v, str) or not math.isfinite(v):
        return str(v)
    if metric in ("accuracy", "accuracy_worst_class", "exact_match", "exact_match_reference", "identity",
                  "identity_last", "identity_label"):
        return f"{100 * v:.1f}%"
    if metric == "kv_peak_bytes":
        return f"{v / 1e6:.2f} MB"
    if metric in ("psnr_gt", "psnr_gt_last", "psnr_ref_last", "frames_per_s", "ref_frames_per_s"):
        return f"{v:.2f}"
    if metric in ("ssim", "reuse_fraction"):
        return f"{v:.3f}"
    if metric in ("speedup_flops", "speedup_wall", "psnr", "wall_over_flops"):
        return f"{v:.2f}"
    if metric in ("fid", "fid_ref"):
        return f"{v:.1f}"
    return f"{v:.3g}"


def cell(metric, values):
    if metric == "speedup_wall_iqr":  # text: one run's quartiles each
        return " / ".join(values) if values else "-"
    vals = [float(v) for v in values]
    if not vals:
        return "-"
    if len(set(vals)) == 1:
        return fmt_metric(metric, vals[0])
    if not all(math.isfinite(v) for v in vals):
        return " / ".join(fmt_metric(metric, v) for v in vals)
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{fmt_metric(metric, mean)} ± {fmt_metric(metric, sd) if not metric.startswith('accuracy') else f'{100 * sd:.1f}'}"


def groups(s):
    out = {}
    for name, r in s["runs"].items():
        if r["status"] == "done":
            out.setdefault(r["group"], []).append(r)
    return out


def table_block(args):
    """Rows are variant groups of one experiment or, with several experiment files, `name/variant`
    entries of `variants=` (all done variants of each when it is omitted)."""
    files = [a for a in args if a.endswith(".yaml")]
    opts = dict(a.split("=", 1) for a in args if "=" in a)
    if not files:
        raise ValueError("a table names at least one experiment file")
    summ = {experiment_name(f): (f, summary_of(f)) for f in files}
    many = len(summ) > 1
    rows = []  # (label, runs)
    wanted = opts["variants"].split(",") if "variants" in opts else \
        [f"{n}/{v}" if many else v for n, (_, s) in summ.items() for v in groups(s)]
    for w in wanted:
        exp, _, variant = w.rpartition("/")
        candidates = [exp] if exp else list(summ)
        found = [(n, groups(summ[n][1])[variant]) for n in candidates if n in summ and variant in groups(summ[n][1])]
        if not found:
            raise ValueError(f"no done variant `{w}` in {', '.join(files)} "
                             f"(variants: {', '.join(v for _, s in summ.values() for v in groups(s))})")
        rows.append((w if many else variant, found[0][1]))
    metrics = opts["metrics"].split(",") if "metrics" in opts else \
        [m for m in DEFAULT_METRICS if any(m in r["metrics"] for _, rs in rows for r in rs)]
    seeds = max(len(rs) for _, rs in rows)
    lines = ["| variant | " + " | ".join(HEADERS.get(m, m) for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for label, rs in rows:
        lines.append(f"| {label} | " + " | ".join(cell(m, [v for r in rs if (v := metric_value(r, m)) is not None])
                                                 for m in metrics) + " |")
    cal = max(len({r.get("calibration_seed") for r in rs}) for _, rs in rows)
    over = f"{seeds // cal} seeds x {cal} calibration seeds" if cal > 1 else f"{seeds} seeds"
    note = f"Mean ± standard deviation over {over}. " if seeds > 1 else ""
    return "\n".join(lines) + f"\n\n{note}" + " ".join(environment_line(s, f) for f, s in summ.values()) + "\n"


def cpu_text(e):
    """The CPU(s) of an environment, without `|` (the docs put it in table cells)."""
    cpu = e.get("cpu") if isinstance(e.get("cpu"), str) else "; ".join(e.get("cpu") or ["not recorded"])
    return cpu.replace(" | ", ", ")


def environment_line(s, exp_file):
    e = s["environment"]
    sha = e.get("git_sha") if isinstance(e.get("git_sha"), str) else ", ".join(e.get("git_sha") or [])
    cpu = cpu_text(e)
    when = (e.get("created_utc") or ["?"])[-1][:10]
    link = os.path.relpath(os.path.join(ROOT, "docs", "summaries", s["experiment"] + ".json"), PAGE_DIR[0])
    return (f"*Generated from [`docs/summaries/{s['experiment']}.json`]({link}) "
            f"(`{exp_file}`, {len(s['runs'])} runs, git {sha}{' dirty' if e.get('git_dirty') else ''}, {when}, "
            f"{e.get('threads')} thread(s), cpu {cpu}).*")


def claims_block(args):
    s = summary_of(args[0])
    lines = ["| claim | verdict here |", "|---|---|"]
    lines += [f"| {c['text']} | {summaries.verdict_text(c)} |" for c in s["claims"]]
    return "\n".join(lines) + "\n"


def verdicts_block(args):
    """Every claim of the named experiments (of every committed summary when none is named)."""
    if args:
        items = [(f, summary_of(f)) for f in args]
    else:
        items = [(None, summaries.load(p)) for p in sorted(glob.glob(os.path.join(ROOT, "docs", "summaries", "*.json")))]
    lines = ["| experiment | claim | verdict here |", "|---|---|---|"]
    for f, s in items:
        lines += [f"| `{f or s['experiment']}` | {c['text']} | {summaries.verdict_text(c)} |" for c in s["claims"]]
    return "\n".join(lines) + "\n"


def reproduction_block(args):
    lines = ["| experiment | numbers within tolerance | verdicts reproduced | changed | committed on | re-run on |",
             "|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "reproduction", "*.json"))):
        with open(path) as fh:
            r = json.load(fh)
        same = sum(v["same"] for v in r["verdicts"])
        changed = "; ".join(f"{v['claim']}: {v['committed']} -> {v['now']}" for v in r["verdicts"] if not v["same"])
        lines.append(f"| `{r['experiment']}` | {r['numbers_within']} of {r['numbers']} | {same} of {len(r['verdicts'])} "
                     f"| {changed or '-'} | {cpu_text(r['committed_environment'])} | {cpu_text(r['environment'])} |")
    return "\n".join(lines) + "\n"


def experiment_files():
    """Experiment name -> file, for every experiment under experiments/ and experiments/papers/."""
    out = {}
    for f in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.yaml")) +
                    glob.glob(os.path.join(ROOT, "experiments", "papers", "*.yaml"))):
        out.setdefault(experiment_name(rel(f)), rel(f))
    return out


def current_config_block(args, cachelab):
    """Which committed summaries were made with the configs their experiment files give now: a
    summary's runs are matched by run id (the hash of each run's resolved config and the files it
    reads), so a run whose config changed since (a key added to a component with a default, an
    edited experiment) is not compared by `cachelab report --compare` until it is re-run."""
    if not cachelab:
        raise ValueError("checking the summaries' run ids needs the binary: --cachelab build/cachelab")
    files = experiment_files()
    lines = ["| summary | experiment | runs made with its current config |", "|---|---|---|"]
    stale, unchecked = 0, []
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "summaries", "*.json"))):
        name = os.path.basename(path)[:-5]
        if name not in files:
            continue  # (a benchmark binary's figures, not an experiment's runs)
        with open(os.path.join(ROOT, files[name])) as fh:
            if re.search(r"^#\s+cachelab calibrate ", fh.read(), re.M):
                unchecked.append(name)  # its run ids hash calibration files made outside the checkout
                continue
        with open(path) as fh:
            runs = json.load(fh)["runs"]
        r = subprocess.run([cachelab, "validate", files[name], "--ids"], capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise ValueError(f"`cachelab validate {files[name]} --ids` failed: {r.stderr.strip()}")
        now = {line.split()[-1] for line in r.stdout.splitlines() if line.strip()}
        same = sum(v.get("run_id") in now for v in runs.values())
        if same < len(runs):
            stale += 1
            lines.append(f"| [`{name}`](summaries/{name}.json) | `{files[name]}` | {same} of {len(runs)} |")
    note = ("\nNot checked here: " + ", ".join(f"`{n}`" for n in unchecked) + " (their header `cachelab calibrate` "
            "lines write calibration files that are not committed, and a run id hashes the files it reads).\n"
            if unchecked else "")
    if not stale:
        return "Every summary's runs were made with its experiment's current config.\n" + note
    return "\n".join(lines) + "\n" + note


def config_block(args, cachelab):
    if not cachelab:
        raise ValueError("the config reference needs the binary: --cachelab build/cachelab")
    out = subprocess.run([cachelab, "list", "--markdown"], capture_output=True, text=True, check=True).stdout
    return out.rstrip("\n") + "\n"


def tolerances_block(args):
    lines = ["| metric | a re-run reproduces it when it moves by at most |", "|---|---|"]
    for m, (kind, amount) in summaries.TOLERANCE.items():
        lines.append(f"| `{m}` | {amount:g} {'(absolute)' if kind == 'abs' else '(relative)'} |".replace(
            f"{amount:g} (relative)", f"{amount * 100:g}% (relative)"))
    return "\n".join(lines) + "\n"


def bench_block(args):
    """Figures of the benchmark binary (`cachelab_bench --json`): median [quartiles] per row; the
    rows of one section named `ROW: COLUMN` become a grid. `section=` matches a part of the
    section's name (`_` for a space)."""
    if not args or not args[0].endswith(".json"):
        raise ValueError("a bench table names the figures file: bench docs/summaries/NAME.json [section=TEXT]")
    path = os.path.join(ROOT, args[0])
    if not os.path.exists(path):
        raise ValueError(f"no figures file `{args[0]}`; make it with `build/cachelab_bench ... --json {args[0]}`")
    with open(path) as fh:
        b = json.load(fh)
    opts = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    want = opts.get("section", "").replace("_", " ")
    rows = [r for r in b["rows"] if want in r["section"]]
    if not rows:
        raise ValueError(f"no rows of section `{want}` in `{args[0]}`")
    sections = list(dict.fromkeys(r["section"] for r in rows))

    def value(r):
        unit = r.get("unit", "")
        f = (lambda v: f"{v:.3f}") if unit == "s" else (lambda v: f"{v:+.1f}") if unit == "%" else (lambda v: f"{v:.2f}")
        q = f" [{f(r['q25'])}, {f(r['q75'])}]" if "q25" in r else ""
        return f"{f(r['median'])}{(' ' + unit) if unit else ''}{q}"

    if len(sections) == 1 and all(": " in r["name"] for r in rows):
        names = list(dict.fromkeys(r["name"].split(": ", 1)[0] for r in rows))
        cols = list(dict.fromkeys(r["name"].split(": ", 1)[1] for r in rows))
        cells = {tuple(r["name"].split(": ", 1)): value(r) for r in rows}
        lines = [f"| {sections[0]} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        lines += [f"| {n} | " + " | ".join(cells.get((n, c), "-") for c in cols) + " |" for n in names]
    else:
        lines = [f"| {sections[0] if len(sections) == 1 else 'measurement'} | median [quartiles] |", "|---|---|"]
        lines += [f"| {r['name'] if len(sections) == 1 else r['section'] + ': ' + r['name']} | {value(r)} |" for r in rows]
    e = b["environment"]
    link = os.path.relpath(path, PAGE_DIR[0])
    return ("\n".join(lines) + f"\n\n*Generated from [`{args[0]}`]({link}) (`{b['command']}`, git {e.get('git_sha')}"
            f"{' dirty' if e.get('git_dirty') else ''}, {e.get('created_utc', '?')[:10]}, {e.get('threads')} thread(s), "
            f"cpu {cpu_text(e)}).*\n")


def safetensors_metadata(path):
    import struct
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n)).get("__metadata__", {})


def routers_block(args):
    """Router files as their training left them: the recipe that names the file as its output, its
    lambda, the share of routed entries skipped and the held-out final image's PSNR (the trainer's
    check: thresholded router vs uncached, data range 2)."""
    recipes = {}
    for r in sorted(glob.glob(os.path.join(ROOT, "configs", "train", "*.yaml"))):
        with open(r) as fh:
            out = ((yaml.safe_load(fh) or {}).get("train") or {}).get("output")
        if out:
            recipes[os.path.normpath(out)] = os.path.basename(r)
    lines = ["| router file (`models/weights/`) | recipe (`configs/train/`) | lambda | routed entries skipped "
             "| held-out final image (training's check) | iterations |", "|---|---|---|---|---|---|"]
    for w in args:
        path = os.path.join(ROOT, w)
        if not os.path.exists(path):
            raise ValueError(f"no router file `{w}`")
        md = safetensors_metadata(path)
        if md.get("format") != "cachelab l2c router":
            raise ValueError(f"`{w}` is not a router file (format `{md.get('format')}`)")
        lam = ((yaml.safe_load(md.get("config_yaml", "")) or {}).get("train") or {}).get("lambda")
        mse = md.get("eval_image_mse_thresholded")
        psnr = f"{10 * math.log10(4 / float(mse)):.1f} dB" if mse else "-"
        lines.append(f"| `{os.path.basename(w)[:-len('.safetensors')]}` | `{recipes.get(os.path.normpath(w), '-')}` "
                     f"| {lam:g} | {100 * float(md['skipped_fraction']):.1f}% | {psnr} | {md.get('iterations', '-')} |")
    return "\n".join(lines) + "\n"


KINDS = {"table": table_block, "routers": routers_block, "bench": bench_block, "tolerances": tolerances_block, "claims": claims_block, "verdicts": verdicts_block, "reproduction": reproduction_block,
         "environment": lambda a: environment_line(summary_of(a[0]), a[0]) + "\n"}


def render(spec, cachelab):
    kind, *args = spec.split()
    if kind == "config-reference":
        return config_block(args, cachelab)
    if kind == "current-configs":
        return current_config_block(args, cachelab)
    if kind not in KINDS:
        raise ValueError(f"unknown generated block `{kind}` (kinds: {', '.join(list(KINDS) + ['config-reference', 'current-configs'])})")
    return KINDS[kind](args)


PAGE_DIR = [ROOT]  # the folder of the page being generated (links are relative to it)


def regenerate(text, cachelab, problems, where):
    PAGE_DIR[0] = os.path.dirname(os.path.join(ROOT, where))
    def sub(m):
        try:
            body = render(m.group("spec"), cachelab)
        except (ValueError, OSError, subprocess.CalledProcessError) as e:
            problems.append(f"{where}: generated block `{m.group('spec')}`: {e}")
            return m.group(0)
        return m.group(1) + body + m.group(4)
    return BLOCK.sub(sub, text)


# ---- links ----------------------------------------------------------------------------------

def anchors(path):
    """GitHub's heading anchors of a markdown page (lowercase, spaces to '-', punctuation dropped)."""
    out, seen = set(), {}
    in_code = False
    with open(path) as fh:
        for line in fh:
            if line.startswith("```"):
                in_code = not in_code
            if in_code or not line.startswith("#"):
                continue
            title = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", line.lstrip("#").strip())
            a = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
            n = seen.get(a, 0)
            seen[a] = n + 1
            out.add(a if n == 0 else f"{a}-{n}")
    return out


def check_links(path, text, problems):
    here = os.path.dirname(path)
    stripped = re.sub(r"```.*?```", "", text, flags=re.S)
    stripped = re.sub(r"`[^`\n]*`", "", stripped)
    for target in re.findall(r"\]\(([^)\s]+)\)", stripped):
        if re.match(r"[a-z]+:", target):
            continue  # external: not reachable from here
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(here, file)) if file else path
        if not os.path.exists(dest):
            problems.append(f"{rel(path)}: link `{target}`: {rel(dest)} does not exist")
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            problems.append(f"{rel(path)}: link `{target}`: no heading #{anchor} in {rel(dest)}")


# ---- commands -------------------------------------------------------------------------------

def commands(text):
    """The command lines of the ```bash blocks (continuations joined, comments dropped)."""
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                yield line


class CommandChecker:
    def __init__(self, cachelab):
        self.cachelab = cachelab
        self.help = {}
        self.validated = {}

    def command_help(self, sub):
        if sub not in self.help:
            r = subprocess.run([self.cachelab, sub, "--help"], capture_output=True, text=True)
            self.help[sub] = r.stdout if r.returncode == 0 and "usage: cachelab" in r.stdout else None
        return self.help[sub]

    def check(self, line, where, problems):
        for segment in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
            try:
                words = shlex.split(segment)
            except ValueError as e:
                problems.append(f"{where}: `{segment}`: {e}")
                continue
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words = words[1:]  # VAR=value prefixes
            if not words:
                continue
            if words[0] == "bash" and len(words) > 1:
                self.exists(words[1], segment, where, problems)
            elif words[0].endswith("cachelab") and self.cachelab:
                self.check_cachelab(words[1:], segment, where, problems)

    def exists(self, path, segment, where, problems):
        if "$" in path or "*" in path or path.isupper():
            return
        if not os.path.exists(os.path.join(ROOT, path)):
            problems.append(f"{where}: `{segment}`: `{path}` does not exist")

    def check_cachelab(self, args, segment, where, problems):
        if not args or args[0].startswith("-"):
            return
        sub = args[0]
        text = self.command_help(sub)
        if text is None:
            problems.append(f"{where}: `{segment}`: `cachelab {sub}` is not a command")
            return
        for a in args[1:]:
            if a.startswith("--"):
                flag = a.split("=", 1)[0]
                if not re.search(re.escape(flag) + r"\b", text):
                    problems.append(f"{where}: `{segment}`: `cachelab {sub}` has no option {flag}")
        positional = [a for a in args[1:] if not a.startswith("-")]
        for p in positional:
            if p.endswith((".yaml", ".sh", ".py")) and "/" in p:
                self.exists(p, segment, where, problems)
        if sub in ("run", "sweep", "validate", "calibrate", "profile") and positional and \
                positional[0].endswith(".yaml") and os.path.exists(os.path.join(ROOT, positional[0])):
            overrides = [p for p in positional[1:] if "=" in p and "$" not in p]
            key = tuple([positional[0]] + overrides)
            if key not in self.validated:
                r = subprocess.run([self.cachelab, "validate", *key, "--count"], capture_output=True, text=True, cwd=ROOT)
                self.validated[key] = r.stderr.strip() if r.returncode != 0 else None
            if self.validated[key]:
                problems.append(f"{where}: `{segment}`: {self.validated[key]}")


# ---- main -----------------------------------------------------------------------------------

def main(argv):
    p = argparse.ArgumentParser(description="regenerate (or --check) the docs' generated blocks, links and commands")
    p.add_argument("--check", action="store_true")
    p.add_argument("--cachelab", default="", help="the built binary (config reference, command checks)")
    p.add_argument("--page", action="append", default=[], help="only this page (repeatable; default every page)")
    args = p.parse_args(argv[1:])
    problems, stale = [], []
    checker = CommandChecker(args.cachelab)
    chosen = [os.path.abspath(p) for p in args.page] or pages()
    for path in chosen:
        with open(path) as fh:
            text = fh.read()
        new = regenerate(text, args.cachelab, problems, rel(path))
        if new != text:
            if args.check:
                stale.append(rel(path))
            else:
                with open(path, "w") as fh:
                    fh.write(new)
                print(f"docs: rewrote {rel(path)}")
        check_links(path, new, problems)
        for line in commands(new):
            checker.check(line, rel(path), problems)
    for s in stale:
        problems.append(f"{s}: generated blocks are stale (run `python3 tools/docs.py --cachelab build/cachelab`)")
    for msg in problems:
        print(f"docs: {msg}", file=sys.stderr)
    n = len(chosen)
    print(f"docs: {n} pages, {len(checker.validated)} experiment commands validated, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
