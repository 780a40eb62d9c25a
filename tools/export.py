#!/usr/bin/python3
"""Tidy long-format tables of an experiment's runs, for pandas / R / spreadsheets.

    cachelab export results/EXP --level run|step|site [--format csv|parquet] [--output FILE]

One row per run (`run`), per run x step (`step`) or per run x step x site (`site`). Every
row names the run with the identity columns of index.csv (which cachelab writes): run_id,
run (with its sweep point), variant (without it), is_reference, reference_run, seed, one
column per swept key (`sweep:` of the experiment, e.g. `cache.interval`) and status. Only
the experiment's current runs (those in index.csv), in experiment order. Writes
<folder>/export_<level>.csv unless --output is given.
"""
import os
import sys

import h5py
import numpy as np
import pandas as pd


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


IDENTITY = ["run_id", "run", "variant", "is_reference", "reference_run", "seed"]


def identity_columns(index, swept):
    """Each run's identity row from index.csv, which cachelab writes (framework/recorder.cpp,
    write_index_csv): run_id, run, variant, is_reference, reference_run, seed, the swept keys
    and status. One source for both tables, so they always agree."""
    cols = IDENTITY + [k for k in swept if k in index.columns] + ["status"]
    return {row["run_id"]: {k: row[k] for k in cols} for _, row in index[cols].iterrows()}


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
    table = pd.read_csv(index, dtype={"run": str, "variant": str, "reference_run": str}, keep_default_na=False,
                        na_values={"seed": [""]})
    if not set(IDENTITY) <= set(table.columns):
        print(f"error: {index} was written by an older cachelab (no {', '.join(IDENTITY)} columns): "
              "re-run the experiment (finished runs are skipped) to rewrite it", file=sys.stderr)
        return 2
    first_summary = list(table.columns).index("overrides") + 1 if "overrides" in table.columns else len(table.columns)
    swept = [c for c in table.columns[len(IDENTITY):first_summary] if c not in ("status", "failed_step", "error",
                                                                              "overrides")]
    ids = list(table["run_id"])
    identity = identity_columns(table, swept)
    frames = []
    for run_id in ids:
        path = os.path.join(folder, run_id + ".h5")
        if not os.path.exists(path):
            continue
        with h5py.File(path, "r") as f:
            base = identity[run_id]
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
