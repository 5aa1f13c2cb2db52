# One-command setup, build and test. Without make, see README.md for the plain commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= 2
# Extra pip options, empty here. CI on GitHub sets the PyTorch CPU index, e.g.
#   make test PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
# (otherwise torch==2.13.0 resolves to the ~3.7 GB CUDA build on Linux).
PIP_EXTRA ?=

.PHONY: test-colab-versions
.PHONY: setup book test test-lib test-notebooks test-seeds seed-sweep lint test-build test-browser test-colab bench clean

setup: $(STAMP)

# (Re)install when requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0) if sys.version_info >= (3, 11) else sys.exit("Python 3.11 or newer is needed (the pins in requirements.txt); $(PYTHON) is " + sys.version.split()[0] + ". Install one and run e.g. make PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) -r requirements.txt
	touch $(STAMP)

# The HTML book, then the reader notebooks (executed copies, glue and citations filled in) that
# its download and Colab buttons serve. The execution cache is keyed on the notebooks' code,
# src/lnbn_utils, the requirements and LNBN_SEED (tools/exec_cache.py, run by the build).
# The Simplified Chinese edition (tools/translate.py: book/zh/*.yml + the English notebooks'
# code) is built into _build/html/zh from the same execution cache; it never executes code.
book: setup
	$(BIN)/python tools/prefill_cache.py
	$(BIN)/jupyter-book build .
	$(BIN)/python tools/translate.py build
	$(BIN)/python tools/reader_notebooks.py
	$(BIN)/python tools/reader_notebooks.py --lang zh
	@echo "Book built: $(CURDIR)/_build/html/index.html (Chinese: _build/html/zh/index.html)"

.PHONY: reader pdf lint-workflows
reader: book

# The whole book as one PDF, offline: a single-page build printed by headless Chromium with a
# local MathJax (needs Debian's chromium + chromium-driver and npm, as test-browser does).
pdf: setup
	$(BIN)/python -m pip install --quiet -r requirements-browser.txt
	$(BIN)/jupyter-book build . --builder singlehtml
	$(BIN)/python tools/pdf.py _build/singlehtml/index.html _build/pdf/lnbn-book.pdf
	@if [ -d _build/html ]; then cp _build/pdf/lnbn-book.pdf _build/html/; fi
	@echo "PDF: $(CURDIR)/_build/pdf/lnbn-book.pdf"
	$(MAKE) pdf-zh

# The Chinese edition's translated pages as one PDF (Chinese text in fonts-noto-cjk).
.PHONY: pdf-zh
pdf-zh: setup
	$(BIN)/python -m pip install --quiet -r requirements-browser.txt
	$(BIN)/python tools/translate.py build --builder singlehtml
	$(BIN)/python tools/pdf.py --lang=zh _build/zh/_build/singlehtml/index.html _build/pdf/lnbn-book-zh.pdf
	@if [ -d _build/html/zh ]; then cp _build/pdf/lnbn-book-zh.pdf _build/html/zh/; fi
	@echo "PDF: $(CURDIR)/_build/pdf/lnbn-book-zh.pdf"

# Schema check of the GitHub workflows (check-jsonschema's bundled GitHub-workflow schema, offline).
lint-workflows: setup
	$(BIN)/python -m pip install --quiet -r requirements-lint.txt
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

# One execution of every notebook per base seed: tools/prefill_cache.py executes them (both
# cores) into the build's cache, and that execution is the test (a failing assert prints its
# cell's traceback and stops make); the strict build and the reader notebooks read the cache.
# nbval executes every notebook too, in CI's second-seed pass (test-seeds).
test: setup test-lib test-build

# The formatter gate (ruff.toml: 88 columns): the library, tests, tools, benchmarks and the
# notebooks' code cells.
LINT_PATHS ?= src tests tools benchmarks book
lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

test-lib: setup lint
	$(BIN)/python tools/nbtool.py --check
	$(BIN)/python tools/translate.py check
	$(BIN)/pytest -q tests -n $(JOBS) --ignore=tests/browser
	$(BIN)/pytest -q --doctest-modules src/lnbn_utils -p no:cacheprovider

# One kernel per notebook (--dist loadfile), both cores; the assert cells are the checks.
# Timing findings fail here (LNBN_STRICT_TIMING=1); on Colab they only warn.
test-notebooks: setup
	LNBN_STRICT_TIMING=1 $(BIN)/pytest -q --nbval-lax --dist loadfile -n $(JOBS) book --durations=0

# Every notebook again under other base seeds: the findings are not an accident of seed 0.
SEEDS ?= 1
test-seeds: setup
	for seed in $(SEEDS); do \
	  echo "== LNBN_SEED=$$seed"; \
	  LNBN_SEED=$$seed LNBN_STRICT_TIMING=1 $(BIN)/pytest -q --nbval-lax --dist loadfile \
	    -n $(JOBS) book --durations=0 || exit 1; \
	done

# The seed sweep (a maintainer's command, not part of `make test`): every notebook, or NB=<stem>
# ..., at each base seed in SEEDS; merges into book/data/seed_sweep/<stem>.json, which the
# evidence ledger reads ("held at k of n base seeds"). About 10x a page's run time per 10 seeds.
NB ?=
seed-sweep: setup
	$(BIN)/python tools/seed_sweep.py --seeds "$(SEEDS)" $(if $(NB),--nb $(NB)) --jobs $(JOBS)

# tools/prefill_cache.py executes the notebooks into the build's cache on both cores first
# (timing findings strict), prints per-notebook times against the page budgets, and stops
# on a failing notebook with its traceback.
test-build: setup
	LNBN_STRICT_TIMING=1 $(BIN)/python tools/prefill_cache.py
	$(BIN)/jupyter-book build . -W --keep-going
	$(BIN)/python tools/translate.py build -W
	@echo "Book built: $(CURDIR)/_build/html/index.html (Chinese: _build/html/zh/index.html)"

# Headless Chromium over the built book (needs Debian's chromium + chromium-driver, and npm for MathJax):
# every page, and the reader notebooks behind its download buttons. Screenshots: _build/screenshots/.
test-browser: book
	$(BIN)/python -m pip install --quiet -r requirements-browser.txt
	LNBN_REQUIRE_BROWSER=1 $(BIN)/pytest -q tests/browser
	@echo "Screenshots: $(CURDIR)/_build/screenshots/"

# The Colab path, on the reader notebooks readers get (_build/reader, written by `make book`): a fresh
# venv with only torch, matplotlib and a kernel (as on Colab); each notebook's hidden install cell
# installs lnbn_utils, at the commit the book was built from, from a clone of this repository.
COLAB_VENV := _build/colab-venv
test-colab: book
	rm -rf $(COLAB_VENV) _build/colab-repo
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install --quiet $(PIP_EXTRA) torch==2.13.0 matplotlib==3.11.2 ipykernel==7.4.0 nbclient==0.11.0
	git clone --quiet . _build/colab-repo && git -C _build/colab-repo checkout --quiet -B main
	$(BIN)/python tools/reader_notebooks.py --check _build/reader/book/*.ipynb
	LNBN_INSTALL_FROM=file://$(CURDIR)/_build/colab-repo JOBS=$(JOBS) $(COLAB_VENV)/bin/python tools/colab_check.py _build/reader/book

# The Colab path on another stack than the build's pins: an older supported transformers
# (the auditor needs >= 5; the reader notebooks' install cell checks it) and the torch of
# COLAB_TORCH (default: the pin, the only CPU build on an offline machine's disk; with the
# CPU index in PIP_EXTRA, as on GitHub, plain "torch" takes the newest CPU build). Never a
# bare "torch" without that index: it resolves to a multi-GB CUDA build on Linux.
COLAB_TORCH ?= $(if $(PIP_EXTRA),torch,torch==2.13.0)
COLAB_TRANSFORMERS ?= transformers==5.0.0
test-colab-versions: book
	rm -rf $(COLAB_VENV) _build/colab-repo
	$(PYTHON) -m venv $(COLAB_VENV)
	$(COLAB_VENV)/bin/python -m pip install --quiet $(PIP_EXTRA) "$(COLAB_TORCH)" matplotlib ipykernel nbclient "$(COLAB_TRANSFORMERS)"
	$(COLAB_VENV)/bin/python -m pip list 2>/dev/null | grep -E -i "^(torch|transformers|matplotlib) "
	git clone --quiet . _build/colab-repo && git -C _build/colab-repo checkout --quiet -B main
	LNBN_COLAB_RECORD=_build/colab-passed-versions.json LNBN_INSTALL_FROM=file://$(CURDIR)/_build/colab-repo JOBS=$(JOBS) $(COLAB_VENV)/bin/python tools/colab_check.py _build/reader/book

# Norm speed against PyTorch's kernels (a benchmark, not a test): ratios and bandwidth.
bench: setup
	PYTHONPATH=src $(BIN)/python benchmarks/norms.py

clean:
	rm -rf _build
