#!/usr/bin/env bash
# Run a command with a temporary folder of its own (TMPDIR), then fail if it left anything there: every notebook and
# test removes what it writes (CI once failed on a full disk; each test run had left ~15 folders, GBs under pytest's).
# torch's compile cache keeps its usual place (it is meant to outlive the run); a forced ATEN_CPU_CAPABILITY gets its own,
# as in the Makefile and tests/conftest.py (inductor's cache is not keyed on it).
#   tools/no_leftovers.sh nbdev_test --n_workers 2
set -uo pipefail
base="${TMPDIR:-/tmp}"
if [ -n "${ATEN_CPU_CAPABILITY:-}" ]; then cache="$base/torchinductor-deit-scratch-${ATEN_CPU_CAPABILITY,,}"
else cache="$base/torchinductor_$(id -un)"; fi
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$cache}"
t="$(mktemp -d "$base/deit-scratch-tmpdir.XXXXXX")"
TMPDIR="$t" "$@"; rc=$?
# allowed, torch's and others' own: ONNX Runtime's 51-byte session id (.ses, rewritten each time); torchrun's log folders
# (torchelastic_*, one per run, left by torch.distributed.elastic: 16 KB); inductor's precompiled headers (torchinductor_*:
# torch 2.13 puts them in TMPDIR whatever TORCHINDUCTOR_CACHE_DIR says, ~300 MB, removed with the folder); pytest's
# per-user folder once it has removed its run (policy "failed": a run with a failure keeps its folders, and then the
# command has failed anyway)
left="$(cd "$t" && find . -mindepth 1 -maxdepth 1 ! -name .ses ! -name 'torchelastic_*' ! -name 'torchinductor_*' \
          ! -name 'pytest-of-*'; find . -path './pytest-of-*/*' ! -name 'pytest-current' -print 2>/dev/null)"
if [ "$rc" -eq 0 ] && [ -n "$left" ]; then
  echo "!! '$*' left these in its temporary folder (a notebook or test must remove what it writes):"
  (cd "$t" && echo "$left" | head -40 | while read -r f; do
     echo "  $(du -sh "$f" | cut -f1)  $f  $(find "$f" -mindepth 1 -maxdepth 2 2>/dev/null | head -4 | tr '\n' ' ')"; done)
  rc=1
fi
rm -rf "$t"       # always: a failed run's folders too (run the command alone to keep them for a look)
exit "$rc"
