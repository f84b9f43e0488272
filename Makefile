# On a fresh machine (Python >= 3.11, make, git); times on a 2-core CPU, set-up included:
#   make course   set everything up, then open the course in JupyterLab on nbs/
#                 (make course HEADLESS=1: execute every notebook, all cells but GPU ones, training included, without
#                 a browser; make course HEADLESS=1 QUICK=1: the same without the #| slow training cells)
#   make test     the fast tier (~2.5 min): nbdev_test on the notebooks + pytest tests/ -m "not slow"
#   make test-all everything (~5 min): the fast tier + the slow pytest tests (torchrun, inductor, ONNX, real
#                 training, Chromium, wheels, killed children); what CI runs (.ci/run)
#   make docs     build the website into _docs/ (Quarto's nbdev_docs where Quarto is installed, else an offline
#                 nbconvert build of the same pages) and check it: pages, figures, links, and in headless Chromium
.PHONY: course test test-all setup check-sync docs
VENV := .venv/bin
# Without an NVIDIA GPU, Triton kernels run in its CPU interpreter. Triton reads TRITON_INTERPRET when it is first
# imported, and nbdev_test runs several notebooks per process (torch's profiler imports triton too), so set it up front.
NB_ENV := $(if $(shell command -v nvidia-smi),,TRITON_INTERPRET=1)
# Tests run two processes at once (nbdev_test --n_workers 2, pytest -n 2): one thread each, or their OpenMP threads spin
# against each other on a 2-core machine (several times slower); and no trace lines from torch's profiler (kineto)
TEST_ENV := $(NB_ENV) OMP_NUM_THREADS=1 KINETO_LOG_LEVEL=6
# ATEN_CPU_CAPABILITY=avx2 (torch's kernels forced lower, to test other kernels): oneDNN and MKL at the same level, and
# inductor's cache apart (tests/conftest.py says why; the notebooks need the same)
ifneq ($(filter avx2 default,$(ATEN_CPU_CAPABILITY)),)
export ONEDNN_MAX_CPU_ISA ?= $(if $(filter avx2,$(ATEN_CPU_CAPABILITY)),AVX2,SSE41)
export MKL_ENABLE_INSTRUCTIONS ?= $(if $(filter avx2,$(ATEN_CPU_CAPABILITY)),AVX2,SSE4_2)
export TORCHINDUCTOR_CACHE_DIR ?= /tmp/torchinductor-deit-scratch-$(ATEN_CPU_CAPABILITY)
endif
PYTEST := $(VENV)/python -m pytest tests/ -q -n 2 --dist loadgroup
# each run gets a temporary folder of its own and fails if it leaves anything in it (notebooks and tests clean up)
CLEAN := tools/no_leftovers.sh

course:
	tools/setup_env.sh dev,course
ifdef HEADLESS
ifdef QUICK
	$(TEST_ENV) $(VENV)/nbdev_test --n_workers 2 --do_print
else
	# one notebook at a time with all the cores (13 trains the teacher that 14 then reads from the cache)
	$(NB_ENV) KINETO_LOG_LEVEL=6 $(VENV)/nbdev_test --flags slow --n_workers 1 --do_print
endif
else
	$(VENV)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) nbs/
endif

test: setup check-sync
	$(VENV)/python tools/check_order.py
	$(TEST_ENV) $(CLEAN) $(VENV)/nbdev_test --n_workers 2
	$(TEST_ENV) $(CLEAN) $(PYTEST) -m "not slow"

test-all: setup check-sync
	$(VENV)/python tools/check_order.py
	$(TEST_ENV) $(CLEAN) $(VENV)/nbdev_test --n_workers 2
	$(TEST_ENV) $(CLEAN) $(PYTEST)

docs: setup
	$(VENV)/python tools/build_docs.py

setup:
	tools/setup_env.sh dev

# notebooks are the source: the exported library and cleaned notebooks must be committed (an error in CI, a warning locally)
check-sync:
	$(VENV)/nbdev_clean
	$(VENV)/nbdev_export
	@git diff --quiet -- . ':!*.egg-info' || { git status --porcelain; \
	  echo "!! nbdev_clean/nbdev_export changed tracked files: commit the cleaned notebooks and the exported library"; \
	  [ -z "$$CI" ]; }
