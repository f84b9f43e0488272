#!/usr/bin/env bash
# Run a command with a temporary folder of its own (TMPDIR), then fail if it left anything there: every notebook and
# test removes what it writes (CI once failed on a full disk; each test run had left ~15 folders, GBs under pytest's).
# torch's compile cache keeps its usual place (it is meant to outlive the run).
#   tools/no_leftovers.sh nbdev_test --n_workers 2
set -uo pipefail
base="${TMPDIR:-/tmp}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$base/torchinductor_$(id -un)}"
t="$(mktemp -d "$base/deit-scratch-tmpdir.XXXXXX")"
TMPDIR="$t" "$@"; rc=$?
# allowed: ONNX Runtime's 51-byte session id (.ses, rewritten each time); pytest's per-user folder once it has removed
# its run (policy "failed": a run with a failure keeps its folders, and then the command has failed anyway)
left="$(cd "$t" && find . -mindepth 1 ! -name .ses ! -path './pytest-of-*' -prune -print; \
        find . -path './pytest-of-*/*' ! -name 'pytest-current' -print 2>/dev/null)"
if [ "$rc" -eq 0 ] && [ -n "$left" ]; then
  echo "!! '$*' left these in its temporary folder (a notebook or test must remove what it writes):"
  echo "$left" | head -40
  rc=1
fi
rm -rf "$t"       # always: a failed run's folders too (run the command alone to keep them for a look)
exit "$rc"
