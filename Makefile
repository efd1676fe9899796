# Shortcuts for the commands in README.md; each target is one command you can also type.
PY ?= python

.PHONY: install app test fast lint format

install:  ## the app, the library, training and the test tools, editable
	$(PY) -m pip install -r requirements-dev.txt && $(PY) -m pip install -e .

app:  ## the Gradio app on http://127.0.0.1:7860
	$(PY) app.py

test:  ## the whole suite, as CI runs it (browser tests skip without Chromium)
	$(PY) -m pytest -q

fast:  ## the suite without the slow (multi-process, end-to-end) and browser tests
	$(PY) -m pytest -q -m "not slow and not browser"

lint:  ## what CI checks before the tests
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:  ## fix what ruff can fix, then format
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .
