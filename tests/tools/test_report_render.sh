#!/usr/bin/env bash
# The report rendered in real headless Chromium: every image loads, no console message or
# page error, no figure taller than 1,600 px. A tiny sweep over two seeds and two methods
# (one with a threshold) feeds every figure; the figures are drawn with their label-overlap
# check on (CACHELAB_REPORT_STRICT). Exits 77 (CTest: skipped) only when Chromium
# is missing or cannot start here.
set -uo pipefail
exe=${1:?usage: test_report_render.sh path/to/cachelab}
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "SKIP: no chromium on PATH (Debian package \`chromium\`; bash tools/setup.sh installs it)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
browse() {  # browse URL OUT_DOM OUT_LOG
  timeout 90 "$chromium" --headless --disable-gpu --no-sandbox --no-first-run --user-data-dir="$tmp/profile" \
    --enable-logging=stderr --v=0 --virtual-time-budget=5000 --dump-dom "$1" >"$2" 2>"$3"
}
echo '<!doctype html><html><body><p id="x">up</p></body></html>' >"$tmp/probe.html"
if ! browse "file://$tmp/probe.html" "$tmp/probe.dom" "$tmp/probe.log" || ! grep -q 'id="x"' "$tmp/probe.dom"; then
  echo "SKIP: chromium cannot start here:"; tail -5 "$tmp/probe.log"
  exit 77
fi

export OMP_WAIT_POLICY=PASSIVE
cat >"$tmp/render.yaml" <<'YAML'
name: render
base: [backbones/dit-mnist.yaml]
sampler: {type: ddim, steps: 5}
run: {samples: 2, batch: 2, save_samples: 2, timing_reps: 1, timing_samples: 2}
metrics: [psnr, mse]
variants:
  fora_n2: {cache: {type: fora, interval: 2}}
  fbcache: {cache: {type: fbcache, threshold: 0.1, warmup_steps: 1}}
sweep:
  seed: [0, 1]
claims:
  - {left: fora_n2, metric: speedup_flops, op: ">", value: 1.0}
YAML
"$exe" run "$tmp/render.yaml" --results "$tmp/res" >"$tmp/run.log" 2>&1 || { cat "$tmp/run.log"; exit 1; }
CACHELAB_REPORT_STRICT=1 /usr/bin/python3 "$(dirname "$0")/../../tools/report.py" "$tmp/res/render" >"$tmp/report.log" 2>&1 \
  || { cat "$tmp/report.log"; exit 1; }
page="$tmp/res/render/report/index.html"

# A copy of the page with a first script that records page errors, failed resources and
# console.error calls, and after `load` writes what it saw into the DOM that --dump-dom prints.
/usr/bin/python3 - "$page" "$tmp/res/render/report/check.html" <<'PY'
import sys
hook = """<script>
window.__errs = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  __errs.push(t && t.tagName ? 'failed to load ' + t.tagName + ' ' + (t.src || t.href) : 'page error: ' + e.message);
}, true);
['error', 'warn'].forEach(function (k) {
  var f = console[k];
  console[k] = function () { __errs.push('console.' + k + ': ' + Array.from(arguments).join(' ')); f.apply(console, arguments); };
});
window.addEventListener('load', function () {
  var imgs = Array.from(document.images).map(function (i) {
    return {src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth, h: i.naturalHeight};
  });
  var p = document.createElement('pre');
  p.id = 'render-check';
  p.textContent = JSON.stringify({images: imgs, errors: __errs});
  document.body.appendChild(p);
});
</script>"""
page = open(sys.argv[1]).read()
assert "<head>" in page
open(sys.argv[2], "w").write(page.replace("<head>", "<head>" + hook, 1))
PY
browse "file://$tmp/res/render/report/check.html" "$tmp/dom.html" "$tmp/chromium.log"
rc=$?
[ "$rc" -eq 0 ] || { echo "FAIL chromium exit $rc"; tail -20 "$tmp/chromium.log"; exit 1; }
/usr/bin/python3 - "$tmp/dom.html" "$tmp/chromium.log" "$tmp/res/render/report" <<'PY'
import html, json, os, re, sys
dom, log, folder = open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3]
m = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.S)
fail = []
if not m:
    print("FAIL the check script did not run (no render-check element in the DOM)")
    sys.exit(1)
check = json.loads(html.unescape(m.group(1)))
pngs = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
srcs = sorted(i["src"] for i in check["images"])
want = {"speed_quality.png", "step_cost.png", "errors.png", "site_error.png", "drift.png", "decisions.png",
        "signals.png", "samples.png", "differences.png"}
if not want <= set(srcs):
    fail.append(f"figures missing from the page: {sorted(want - set(srcs))}")
if srcs != pngs:
    fail.append(f"page images {srcs} != PNG files {pngs}")
for i in check["images"]:
    if not i["ok"]:
        fail.append(f"image does not load: {i['src']}")
    elif i["h"] > 1600:
        fail.append(f"image {i['src']} is {i['h']} px tall (bound 1,600)")
fail += [f"page: {e}" for e in check["errors"]]
fail += [f"console: {line}" for line in log.splitlines() if ":CONSOLE" in line]
for f in fail:
    print("FAIL", f)
print(f"render: {len(check['images'])} images loaded "
      f"(tallest {max(i['h'] for i in check['images'])} px), {len(fail)} problem(s)")
sys.exit(1 if fail else 0)
PY
