#!/usr/bin/env bash
# Create .venv with a CPU build of torch (unless a GPU is present) and deit-scratch installed in editable mode.
# Usage: tools/setup_env.sh [extras]   e.g. tools/setup_env.sh dev,course
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=${1:-dev}
PY=${PYTHON:-python3}
TORCH=$(sed -n 's/^torch==//p' constraints.txt)

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "deit-scratch needs Python >= 3.11 (found $("$PY" --version))" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! .venv/bin/python -c "import torch, sys; sys.exit(not torch.__version__.startswith('$TORCH'))" 2>/dev/null; then
  # 1) a torch wheel already on this machine (pip's find-links): take it without asking any index, then its dependencies;
  # 2) no NVIDIA GPU on Linux: PyTorch's CPU-only index, so no CUDA packages are downloaded;
  # 3) otherwise the default index (CUDA build on Linux, CPU build on macOS/Windows).
  if $PIP install -q --no-deps --no-index "torch==$TORCH" 2>/dev/null; then
    $PIP install -q -c constraints.txt "torch==$TORCH"
  elif ! command -v nvidia-smi >/dev/null && [ "$(uname)" = Linux ]; then
    $PIP install -q "torch==$TORCH" --index-url https://download.pytorch.org/whl/cpu
  else
    $PIP install -q "torch==$TORCH"
  fi
fi
$PIP install -q -c constraints.txt -e ".[$EXTRAS]"

# Fashion-MNIST (the training notebooks' data): Debian's package where apt is available and we are root; elsewhere
# deit_scratch.data.load_fashion_mnist downloads it on first use (or see its error message)
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }; } >/dev/null 2>&1 \
    || echo "note: could not install the dataset-fashion-mnist package; Fashion-MNIST will be downloaded on first use" >&2
fi
.venv/bin/nbdev_export
echo "deit-scratch ready in .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
