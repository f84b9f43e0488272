# Two commands on a fresh machine (Python >= 3.11, make, git):
#   make course   set everything up, then open the course in JupyterLab on nbs/
#                 (make course HEADLESS=1: execute every notebook, all cells but GPU ones, without a browser)
#   make test     set everything up, then run all tests (nbdev_test on the notebooks + pytest tests/)
#   make docs     build the website into _docs/ (Quarto's nbdev_docs where Quarto is installed, else an offline
#                 nbconvert build of the same pages) and check it: pages, figures, links, and in headless Chromium
.PHONY: course test setup check-sync docs
VENV := .venv/bin
# Without an NVIDIA GPU, Triton kernels run in its CPU interpreter. Triton reads TRITON_INTERPRET when it is first
# imported, and nbdev_test runs several notebooks per process (torch's profiler imports triton too), so set it up front.
NB_ENV := $(if $(shell command -v nvidia-smi),,TRITON_INTERPRET=1)

course:
	tools/setup_env.sh dev,course
ifdef HEADLESS
	$(NB_ENV) $(VENV)/nbdev_test --flags slow --do_print
else
	$(VENV)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) nbs/
endif

test: setup check-sync
	$(VENV)/python tools/check_order.py
	$(NB_ENV) $(VENV)/nbdev_test --n_workers 2
	$(VENV)/python -m pytest tests/ -q

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
