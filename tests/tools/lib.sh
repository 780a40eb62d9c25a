# Shared by the CLI test scripts: pass/fail counters and the `expect` check.
#   source "$(dirname "$0")/lib.sh"
pass=0 fail=0
ok() { echo "ok   $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
# expect CODE "text1|text2" description -- command...: the command exits CODE and its
# output (stdout + stderr) contains every text.
expect() {
  local code=$1 pattern=$2 what=$3; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" -ne "$code" ]; then bad "$what (exit $rc, wanted $code): $out"; return; fi
  local IFS='|'
  for p in $pattern; do
    grep -qF -- "$p" <<<"$out" || { bad "$what: missing \`$p\` in: $out"; return; }
  done
  ok "$what"
}
# The checkout's root, and `use_tmp`: a fresh folder in $tmp, removed when the script exits.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
use_tmp() { tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT; }
