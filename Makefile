# One place for the environment logic. Every target runs inside .venv, created on first use.
#   make test       unit tests, reference cross-tests and notebook execution (the CI command)
#   make lint       the import ladder (lint-imports), then ruff
#   make notebooks  execute every notebook at full size (smoke mode: LLM_COURSE_SMOKE=1)
#   make demo       train a small GPT on CPU for a few minutes (loss plot, samples, checkpoint)
# Reuse a system torch (Colab, a cluster module):  make test VENV_FLAGS=--system-site-packages

VENV       ?= .venv
VENV_FLAGS ?=
PYTHON     ?= python3
TORCH_PIN  ?= torch==2.13.0
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.llm-course-installed
PYTEST_ARGS ?=

.PHONY: venv test lint notebooks clean

venv: $(STAMP)

# The pinned CPU torch goes in first, and only when the venv has no torch at all: pyproject.toml asks
# for a range, which an existing (e.g. CUDA) torch satisfies, so pip then leaves it alone.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

notebooks: $(STAMP)
	$(PY) -m pytest tests/test_notebooks.py -m "not slow or slow" --full-size $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Train the cpu-demo preset (a few-million-parameter char-level GPT on Python's standard library
# sources: offline, no data folder needed) for a few minutes; outputs in runs/cpu-demo/.
.PHONY: demo
demo: $(STAMP)
	$(PY) gpt/train.py --preset=cpu-demo
