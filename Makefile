# Every target runs inside .venv, which the first target to need it creates from the pins.
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# The PyTorch peer and the weight converter's reference (requirements-bench.txt)
TORCH_VENV ?= .venv-torch
# The MXNet build: auto = a CUDA build where nvidia-smi answers (the newest the driver
# supports), the CPU build elsewhere; or name one: make setup MXNET=cu117 (or MXNET=cpu).
MXNET      ?= auto
MXNET_PKG  := $(shell $(PYTHON) scripts/mxnet_build.py choose --mxnet '$(MXNET)' 2>/dev/null)
STAMP      := $(VENV)/.installed-$(MXNET_PKG)
DATASET    ?= cifar10
# A local copy of the data (official archive, extracted folder or class-per-folder tree);
# empty = download the official archive.
CIFAR_SOURCE ?=
NETWORK    ?= resnet
NUM_LAYERS ?= 164
PRESET     ?= resnet
TRAIN_ARGS ?=

.PHONY: setup system-deps lint test train bench clean

setup: $(STAMP)

# One MXNet build only: scripts/mxnet_build.py uninstalls any other build from the venv first.
$(STAMP): requirements.txt requirements-dev.txt constraints.txt setup.py common/mxnet_build.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -r requirements-dev.txt
	$(PYTHON) scripts/mxnet_build.py install --mxnet '$(MXNET)' --python $(PY) --constraints constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	touch $@

# Graphviz's dot and headless Chromium for the inspector's tests (apt; skipped without root).
system-deps:
	bash scripts/install_browser.sh || echo "system packages not installed: the browser and Graphviz tests will be skipped"

# ruff: the lint rules of ruff.toml; autopep8: the format check of setup.cfg (exit 2 on a diff).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m autopep8 --diff --exit-code --recursive .

# The PyTorch peer venv too: the weight importer/exporter tests check logits against torchvision.
test: setup system-deps lint $(TORCH_VENV)/.installed
	$(PY) -m pytest

train: setup
	$(PY) data/prepare_cifar.py --dataset $(DATASET) $(if $(CIFAR_SOURCE),--source $(CIFAR_SOURCE))
	$(PY) train/train_cifar.py --dataset $(DATASET) --network $(NETWORK) --num-layers $(NUM_LAYERS) \
		--preset $(PRESET) $(TRAIN_ARGS)

$(TORCH_VENV)/.installed: requirements-bench.txt
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install -q -r requirements-bench.txt
	$(TORCH_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

bench: setup $(TORCH_VENV)/.installed
	$(PY) bench/throughput.py --torch-python $(TORCH_VENV)/bin/python
	$(PY) bench/data_pipeline.py
	$(PY) bench/memonger.py
	$(PY) bench/step_profile.py

clean:
	rm -rf $(VENV) $(TORCH_VENV) build *.egg-info .pytest_cache
