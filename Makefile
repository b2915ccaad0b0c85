# mmrobust: the two commands of the README. Each creates .venv and installs what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmrobust-installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint-imports setup clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: pip takes these wheels from local disk where available
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	# torchattacks pins requests~=2.25 in its metadata; install it without dependencies
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mmrobust demo --out runs/demo

# the layer and no-cycle contracts of pyproject.toml [tool.importlinter] run before the tests
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

test: lint-imports
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: lint-imports
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
