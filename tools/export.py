#!/usr/bin/python3
"""Tidy long-format tables of an experiment's runs, for pandas / R / spreadsheets.

    cachelab export results/EXP --level run|step|site [--format csv|parquet] [--output FILE]

One row per run (`run`), per run x step (`step`) or per run x step x site (`site`). Every
row names the run: run_id, variant (without its sweep point), seed, reference_run, status,
and one column per swept key (`sweep:` of the experiment, e.g. `cache.interval`), read
from the run's resolved config. Only the experiment's current runs (those in index.csv),
in experiment order. Writes <folder>/export_<level>.csv unless --output is given.
"""
import os
import sys

import h5py
import numpy as np
import pandas as pd
import yaml


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def lookup(config, dotted):
    """The value at a dotted key of a resolved config, or None."""
    node = config
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node if not isinstance(node, (dict, list)) else yaml.safe_dump(node, default_flow_style=True).strip()


def run_columns(f, swept):
    attrs = {k: f.attrs[k] for k in f.attrs}
    config = yaml.safe_load(text(attrs.get("config_yaml", ""))) or {}
    variant = text(attrs.get("variant", ""))
    row = {
        "run_id": text(attrs.get("run_id", "")),
        "variant": variant.split("[")[0],
        "run": variant,
        "is_reference": int(attrs.get("is_reference", 0)),
        "reference_run": text(attrs.get("reference_run", "")),
        "status": text(attrs.get("status", "")),
        "seed": int(attrs.get("seed", 0)),
    }
    for key in swept:
        row[key] = lookup(config, key)
    return row


def main(argv):
    args = argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__)
        return 2
    folder = args[0].rstrip("/")

    def opt(name, default):
        return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else default

    level, fmt = opt("--level", "run"), opt("--format", "csv")
    if level not in ("run", "step", "site") or fmt not in ("csv", "parquet"):
        print(f"error: --level is run, step or site and --format csv or parquet (got {level}, {fmt})", file=sys.stderr)
        return 2
    index = os.path.join(folder, "index.csv")
    if not os.path.exists(index):
        print(f"error: {folder} has no index.csv: run the experiment first", file=sys.stderr)
        return 2
    ids = list(pd.read_csv(index)["run_id"])
    swept = []
    exp_path = os.path.join(folder, ".experiment.h5")
    if os.path.exists(exp_path):
        with h5py.File(exp_path, "r") as e:
            exp_cfg = yaml.safe_load(text(e.attrs.get("config_yaml", ""))) or {}
        swept = list((exp_cfg.get("sweep") or {}).keys())
    frames = []
    for run_id in ids:
        path = os.path.join(folder, run_id + ".h5")
        if not os.path.exists(path):
            continue
        with h5py.File(path, "r") as f:
            base = run_columns(f, swept)
            if level == "run":
                summary = {k: float(v) for k, v in f["summary"].attrs.items()} if "summary" in f else {}
                frames.append(pd.DataFrame([{**base, **summary}]))
                continue
            steps = {k: f["steps/" + k][:] for k in ("t", "wall_ms", "flops", "err_ref_rel_l1") if "steps/" + k in f}
            T = len(steps.get("t", []))
            if level == "step":
                df = pd.DataFrame({"step": np.arange(T), **steps})
            else:
                names = [text(n) for n in f["sites/names"][:]]
                P = len(names)
                cols = {"step": np.repeat(np.arange(T), P), "t": np.repeat(steps["t"], P),
                        "site": np.tile(names, T)}
                if "sites/kind" in f:
                    cols["kind"] = np.tile([text(k) for k in f["sites/kind"][:]], T)
                for k in ("decision", "signal", "drift_cos", "drift_rel_l1", "err_ref_rel_l1"):
                    cols[k] = f["sites/" + k][:].reshape(-1)
                if "sites/extra" in f:
                    for k in f["sites/extra"]:
                        cols[k] = f["sites/extra/" + k][:].reshape(-1)
                df = pd.DataFrame(cols)
            for k, v in reversed(list(base.items())):
                df.insert(0, k, v)
            frames.append(df)
    if not frames:
        print(f"error: no run files of the index in {folder}", file=sys.stderr)
        return 1
    table = pd.concat(frames, ignore_index=True)
    out = opt("--output", os.path.join(folder, f"export_{level}.{fmt}"))
    if fmt == "csv":
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)
    print(f"export: {len(table)} rows x {len(table.columns)} columns -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
