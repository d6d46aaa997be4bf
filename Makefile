# Two commands do all set-up on a fresh machine:
#   make course   - run every notebook headless on the default profile -> build/ (+ a table)
#   make lab      - JupyterLab on the course's kernel, in notebooks/ (the widgets' front end included): open its URL
#   make test     - unit tests, every notebook through nbval on `tiny`, equivalence tests, the browser tests
#   make test-fast - the same without the tests marked slow (and without the notebooks): < 60 s
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

.PHONY: course lab test test-fast test-recipe install hub sync clean gpu-check gpu-wheels

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

test: $(STAMP) $(HUB_STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -m "not recipe"

# Lesson 10's full recipe on tiny (400 LoRA steps, ~5 min on a 2-core CPU) against the issue's targets.
test-recipe: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -q -m recipe

# The unit tests without the slow ones (notebooks, full evaluations, training runs): under a minute.
test-fast: $(STAMP) $(HUB_STAMP)
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
# tools/gpu_check.py); prints their size and what a device call would carry. GPU_WHEELS_ARGS=--with-pins adds transformers.
GPU_WHEELS_ARGS ?=
gpu-wheels:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) tools/gpu_check.py wheels --dest .whl $(GPU_WHEELS_ARGS)

clean:
	rm -rf build
