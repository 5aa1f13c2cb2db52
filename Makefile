# One-command setup, build and test. Without make, see README.md for the plain commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= 2

.PHONY: setup book test test-lib test-notebooks test-build test-browser clean

setup: $(STAMP)

# (Re)install when requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

book: setup
	$(BIN)/jupyter-book build .
	@echo "Book built: $(CURDIR)/_build/html/index.html"

test: setup test-lib test-notebooks test-build

test-lib: setup
	$(BIN)/python tools/nbtool.py --check
	$(BIN)/pytest -q tests -n $(JOBS) --ignore=tests/browser

# One kernel per notebook (--dist loadfile), both cores; the assert cells are the checks.
test-notebooks: setup
	$(BIN)/pytest -q --nbval-lax --dist loadfile -n $(JOBS) book --durations=0

test-build: setup
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Book built: $(CURDIR)/_build/html/index.html"

# Headless Chromium over the built book (needs Debian's chromium + chromium-driver, and npm for MathJax).
# Screenshots of every page land in _build/screenshots/.
test-browser: setup
	$(BIN)/python -m pip install --quiet -r requirements-browser.txt
	$(BIN)/jupyter-book build .
	LNBN_REQUIRE_BROWSER=1 $(BIN)/pytest -q tests/browser
	@echo "Screenshots: $(CURDIR)/_build/screenshots/"

clean:
	rm -rf _build
