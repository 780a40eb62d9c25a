#!/usr/bin/python3
"""tools/docs.py and tools/summary.py: a stale generated table, a broken link or anchor and
a command with a wrong option are found; a re-run is compared with its committed summary
(moved numbers, changed verdicts); a verdict that changes under a perturbation is fragile.

usage: test_docs.py build/cachelab
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import docs  # noqa: E402
import summary  # noqa: E402

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def fake_summary(psnr_a, psnr_b, verdict, wins):
    runs = {}
    for seed, (a, b) in enumerate(zip(psnr_a, psnr_b)):
        runs[f"a[seed={seed}]"] = {"group": "a", "seed": seed, "run_id": f"a-{seed}", "status": "done",
                                   "metrics": {"psnr": a, "speedup_flops": 2.0}}
        runs[f"b[seed={seed}]"] = {"group": "b", "seed": seed, "run_id": f"b-{seed}", "status": "done",
                                   "metrics": {"psnr": b, "speedup_flops": 2.0}}
    claim = {"left": "a", "metric": "psnr", "op": ">", "right": "b", "text": "a beats b", "verdict": verdict,
             "sentence": "", "wins": wins, "n": len(psnr_a),
             "margins": {str(i): x - y for i, (x, y) in enumerate(zip(psnr_a, psnr_b))}}
    return {"schema": summary.SCHEMA, "experiment": "e", "environment": {"git_sha": "abc", "threads": 1, "cpu": "x"},
            "runs": runs, "claims": [claim]}


def main(argv):
    cachelab = argv[1] if len(argv) > 1 else ""
    with tempfile.TemporaryDirectory() as root:
        docs.ROOT = root
        os.makedirs(os.path.join(root, "experiments"))
        os.makedirs(os.path.join(root, "docs", "summaries"))
        with open(os.path.join(root, "experiments", "e.yaml"), "w") as fh:
            fh.write("name: e\n")
        s = fake_summary([30.0, 31.0, 32.0], [29.0, 30.0, 31.0], "holds", 3)
        with open(os.path.join(root, "docs", "summaries", "e.json"), "w") as fh:
            json.dump(s, fh)

        # A generated block: rendered from the summary, stale when its text differs.
        page = "x\n<!-- generated: table experiments/e.yaml metrics=psnr -->\n| typed | 1 |\n<!-- end generated -->\n"
        problems = []
        fresh = docs.regenerate(page, "", problems, "docs/p.md")
        check(fresh != page and "| a | 31.00 ± 1.00 |" in fresh, "a typed table inside a block is replaced (stale)")
        check(docs.regenerate(fresh, "", problems, "docs/p.md") == fresh, "a fresh block is left as it is")
        claims = docs.regenerate("<!-- generated: claims experiments/e.yaml -->\n<!-- end generated -->\n", "",
                                 problems, "docs/p.md")
        check("| a beats b | holds (3 of 3) |" in claims, "the claims block states the committed verdict")
        check(not problems, "no problem with a known summary")
        docs.regenerate("<!-- generated: table experiments/missing.yaml -->\n<!-- end generated -->\n", "",
                        problems, "docs/p.md")
        check(any("missing.yaml" in p for p in problems), "a block naming an unknown experiment is a problem")

        # The benchmark binary's figures (cachelab_bench --json) and a router's training record.
        fig = {"command": "build/cachelab_bench --reps 3", "environment": {"git_sha": "abc", "threads": 1, "cpu": "x",
                                                                           "created_utc": "2026-12-07T00:00:00Z"},
               "rows": [{"section": "runner overhead", "name": "bare", "median": 5.2, "q25": 5.1, "q75": 5.3, "unit": "s"},
                        {"section": "W8A8 memory", "name": "whole model", "median": 5.61, "unit": "MB"}]}
        with open(os.path.join(root, "docs", "summaries", "b.json"), "w") as fh:
            json.dump(fig, fh)
        problems = []
        bench = docs.regenerate("<!-- generated: bench docs/summaries/b.json section=memory -->\n<!-- end generated -->\n",
                                "", problems, "docs/p.md")
        check("| whole model | 5.61 MB |" in bench and "bare" not in bench and not problems,
              "a bench block renders the rows of its section")
        bench = docs.regenerate("<!-- generated: bench docs/summaries/b.json -->\n<!-- end generated -->\n",
                                "", problems, "docs/p.md")
        check("| runner overhead: bare | 5.200 s [5.100, 5.300] |" in bench, "every row, with its quartiles")
        os.makedirs(os.path.join(root, "models", "weights"))
        os.makedirs(os.path.join(root, "configs", "train"))
        with open(os.path.join(root, "configs", "train", "r.yaml"), "w") as fh:
            fh.write("train: {output: models/weights/r.safetensors}\n")
        meta = {"format": "cachelab l2c router", "config_yaml": "train: {lambda: 0.0003}\n", "skipped_fraction": "0.58",
                "eval_image_mse_thresholded": "4e-4", "iterations": "300"}
        header = json.dumps({"__metadata__": meta}).encode()
        with open(os.path.join(root, "models", "weights", "r.safetensors"), "wb") as fh:
            fh.write(len(header).to_bytes(8, "little") + header)
        routers = docs.regenerate("<!-- generated: routers models/weights/r.safetensors -->\n<!-- end generated -->\n",
                                  "", problems, "docs/p.md")
        check("| `r` | `r.yaml` | 0.0003 | 58.0% | 40.0 dB | 300 |" in routers and not problems,
              "a router's row: its recipe, lambda, skipped share and held-out PSNR (10 log10(4 / 4e-4) = 40 dB)")

        # Links and anchors.
        with open(os.path.join(root, "docs", "t.md"), "w") as fh:
            fh.write("# Title\n## Run `x` here_now\n")
        problems = []
        docs.check_links(os.path.join(root, "docs", "p.md"),
                         "[ok](t.md#title) [ok2](t.md#run-x-here_now) [gone](nope.md) [bad](t.md#nowhere) "
                         "`[code](ignored.md)` [web](https://example.org/x)", problems)
        check(len(problems) == 2 and "nope.md" in problems[0] and "#nowhere" in problems[1],
              "a missing page and a missing anchor are found, code spans and URLs are skipped")

    # Commands, against the real binary and checkout.
    if cachelab:
        docs.ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        checker, problems = docs.CommandChecker(os.path.abspath(cachelab)), []
        text = ("```bash\nbuild/cachelab run experiments/quickstart.yaml seed=7   # fine\n"
                "build/cachelab run experiments/quickstart.yaml --jobz 2\n"
                "build/cachelab run experiments/quickstart.yaml variants.fora_n2.cache.intervall=5\n"
                "build/cachelab frobnicate\nbash tools/nope.sh\n```\n")
        for line in docs.commands(text):
            checker.check(line, "p.md", problems)
        check(len(problems) == 4, f"4 bad commands of 5 are found ({len(problems)}: {problems})")
        check(any("--jobz" in p for p in problems) and any("intervall" in p for p in problems)
              and any("frobnicate" in p for p in problems) and any("nope.sh" in p for p in problems),
              "an unknown option, a bad override, an unknown subcommand and a missing script")

    # A re-run compared with the committed summary: a moved number and a changed verdict.
    committed = fake_summary([30.0, 31.0, 32.0], [29.0, 30.0, 31.0], "holds", 3)
    rerun = fake_summary([30.2, 29.0, 32.0], [29.0, 30.0, 31.0], "inconclusive", 2)
    lines, result = summary.compare(committed, rerun)
    check(result["numbers"] == 12 and result["numbers_within"] == 11, "one PSNR moved by more than 0.5 dB")
    check([v["same"] for v in result["verdicts"]] == [False] and "VERDICT CHANGED" in "\n".join(lines),
          "the changed verdict is reported")
    _, same = summary.compare(committed, committed)
    check(same["numbers_within"] == same["numbers"] and all(v["same"] for v in same["verdicts"]),
          "an identical re-run reproduces everything")

    # Fragile: the verdict under a perturbation differs; spreads of the per-seed margins.
    claims = committed["claims"]
    summary.perturb(claims, [("with 2 threads", rerun["claims"])])
    c = claims[0]
    check(c["fragile"] and summary.verdict_text(c).startswith("fragile: holds (3 of 3) here; inconclusive (2 of 3) "
                                                              "with 2 threads"), "the claim is fragile")
    check(abs(c["perturbation_spread"] - 2.0) < 1e-9 and abs(c["seed_spread"]) < 1e-9,
          "perturbation spread 2 dB (seed 1: margin 1 -> -1) beside a seed spread of 0")
    steady = fake_summary([30.0, 31.0, 32.0], [29.0, 30.0, 31.0], "holds", 3)["claims"]
    summary.perturb(steady, [("with 2 threads", fake_summary([30.1, 31, 32], [29, 30, 31], "holds", 3)["claims"])])
    check(not steady[0]["fragile"] and summary.verdict_text(steady[0]) == "holds (3 of 3)",
          "a verdict that survives the perturbation is not fragile")

    # Same verdict under the perturbation, but a seed's margin (0.1) is inside what the
    # perturbation moved a margin by (0.5): fragile all the same.
    thin = fake_summary([30.1, 31.0, 32.0], [30.0, 30.0, 31.0], "holds", 3)["claims"]
    summary.perturb(thin, [("with 2 threads", fake_summary([30.5, 31, 32], [30.0, 30, 31], "holds", 3)["claims"])])
    check(thin[0]["fragile"] and thin[0]["fragile_by"] == "margin" and "smallest margin of 0.1" in summary.verdict_text(thin[0]),
          "a holding verdict whose margin is inside the perturbation's spread is fragile")

    # An exact claim (margin 0) that every perturbation reproduces bit for bit (spread 0) is not fragile.
    exact = fake_summary([30.0, 31.0, 32.0], [30.0, 31.0, 32.0], "holds", 3)["claims"]
    for c in exact:
        c["margins"] = {"mean": 0.0}
    summary.perturb(exact, [("with OpenBLAS Haswell kernels", [dict(c) for c in exact])])
    check(not exact[0]["fragile"] and exact[0]["perturbation_spread"] == 0,
          "an exact claim reproduced bit for bit under the perturbation is not fragile")

    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
