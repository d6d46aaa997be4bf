# Two commands do all set-up on a fresh machine:
#   make course   - run every notebook headless on the default profile -> build/ (+ a table)
#   make lab      - JupyterLab on the course's kernel, in notebooks/ (the widgets' front end included): open its URL
#   make test     - unit tests, every notebook through nbval on `tiny` (float32), equivalence tests, the browser tests,
#                   and the lanes: every notebook again on `tiny` in float16 and on `sd15` (Hub mirror, float16)
#   make test-fast - the same without the tests marked slow (and without the notebooks): 75 s on 2 cores
#   make lint     - ruff check + ruff format --check (CI runs it before make test)
#   make core-time - each lesson's core time by the stated method (docs/core-time.md)
#   make test-recipe - lesson 10's full training recipe on tiny against its targets (~5 min on a 2-core CPU)
#   make gpu-check - on a CUDA machine: every lesson on `tiny` and full-size `sd15`, time + peak GPU memory, the bench
#                    -> docs/gpu-report.md + .json (docs/gpu-check.md); without an NVIDIA GPU it says to run `make test`
#   make gpu-wheels - where pip works: the wheels a bare GPU machine lacks -> .whl/ (for `make gpu-check` there)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is installed only if the venv has none; on this course's CI machine this is a local CPU build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.course-installed
HUB_VENV ?= .venv-hub
HUB_STAMP := $(HUB_VENV)/.hub-installed

.PHONY: course lab test test-fast test-recipe install hub sync clean gpu-check gpu-wheels lint core-time

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -r requirements-dev.txt -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# olah, the Hub mirror that serves the sd15 lookalike repositories (tests; `python -m course_utils hub --serve`).
$(HUB_STAMP): requirements-hub.txt
	test -x $(HUB_VENV)/bin/python || $(PYTHON) -m venv $(HUB_VENV)
	$(HUB_VENV)/bin/python -m pip install -q -r requirements-hub.txt
	touch $(HUB_STAMP)

hub: $(HUB_STAMP)

course: $(STAMP)
	$(PY) -m course_utils course --out build

# The notebooks in JupyterLab, on .venv's kernel; it prints the URL to open (with its token). LAB_ARGS: e.g. --port=8899
# or --no-browser. It serves the repository and opens on notebooks/, so jupytext.toml applies: saving a lesson there
# also updates its paired .py.
LAB_ARGS ?=
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# COURSE_TRAIN_STEPS: lesson 10's short schedule (its full recipe, 400 steps, is `make test-recipe`)
TEST_ENV := COURSE_PROFILE=tiny COURSE_STRICT_WARNINGS=1 HF_HUB_OFFLINE=1 COURSE_TRAIN_STEPS=16

# Two pytest runs side by side, one thread each on the two cores, split by measured time into halves of about equal
# length (measured 2026-12-07: 1,119 s and 1,100 s): SIDE_TESTS (the float16 lane: every lesson again on `tiny` in
# float16, tests/test_float16_lane.py; three long unit-test files; the appendix notebook on `tiny`) beside everything
# else (unit and equivalence tests, every lesson on `tiny` in float32, every lesson on `sd15` through the Hub mirror in
# float16, the browser tests). Much of a notebook run waits on
# Python, kernels and the mirror, so the halves overlap well; with two PyTorch threads each they would fight over the
# cores (measured here: 34 min instead of 13). The side log is printed after the rest; either failing fails.
TEST_THREADS ?= 1
SIDE_TESTS := tests/test_float16_lane.py tests/test_bench.py tests/test_training.py tests/test_tiny_scores.py \
	notebooks/appendix_teaching_models.ipynb
SIDE_LOG := build/test-side.log
test: $(STAMP) $(HUB_STAMP)
	@mkdir -p build
	@export OMP_NUM_THREADS=$(TEST_THREADS) MKL_NUM_THREADS=$(TEST_THREADS); \
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider -m "not recipe" $(SIDE_TESTS) > $(SIDE_LOG) 2>&1 & side=$$!; \
	trap 'kill $$side 2>/dev/null' INT TERM; \
	$(TEST_ENV) $(PY) -m pytest -q -p no:cacheprovider -m "not recipe" $(addprefix --ignore=,$(SIDE_TESTS)); rest=$$?; \
	wait $$side; side_rc=$$?; \
	echo "--- beside it: $(SIDE_TESTS) ($(SIDE_LOG)) ---"; \
	cat $(SIDE_LOG); \
	echo "make test: the main run exited $$rest, the side run $$side_rc"; \
	test $$rest -eq 0 -a $$side_rc -eq 0

# ruff (pyproject.toml [tool.ruff]): the lint rules, and the formatting `ruff format` would write (CI runs this first).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Lesson 10's full recipe on tiny (400 LoRA steps, ~5 min on a 2-core CPU) against the issue's targets.
test-recipe: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -m recipe

# The unit tests without the slow ones (notebooks, full evaluations, training runs): 75 s here, no olah needed.
# One kind of slow test: e.g. `.venv/bin/pytest -m mirror` (markers: notebooks, mirror, browser, training, install).
test-fast: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -m "not slow and not recipe"

# After editing a notebook's .py (or .ipynb), bring its pair up to date.
sync: $(STAMP)
	$(VENV)/bin/jupytext --sync notebooks/[0-9][0-9]_*.py

# The GPU validation run. No prerequisites: a bare GPU machine has no network. tools/gpu_check.py uses .venv when its
# torch has CUDA, else this python3 with .whl/ installed offline (torch stays the machine's). GPU_CHECK_ARGS: e.g.
# --profile sd15 --notebooks 03 06, --sd15-settings num_inference_steps=25, --no-bench (see --help).
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONUNBUFFERED=1 $(PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

# Wheels for CPython 3.12 / manylinux x86-64, no dependencies resolved: exactly what the GPU image lacks (the list is in
# tools/gpu_wheels.py); prints their size and what a device call would carry. GPU_WHEELS_ARGS=--with-pins adds transformers.
GPU_WHEELS_ARGS ?=
gpu-wheels:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) tools/gpu_check.py wheels --dest .whl $(GPU_WHEELS_ARGS)

clean:
	rm -rf build

# Each lesson's core time (docs/core-time.md); standard library only.
core-time:
	$(PYTHON) tools/core_time.py
