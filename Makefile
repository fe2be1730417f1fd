# Batch image inference notebooks: `make run` runs them, `make test` tests them.
# Every target first makes the environment ready: the project's own .venv (built when
# missing), or the active conda environment (see docs/setup.md).

KERNEL := batch-inference
KERNEL_DISPLAY_NAME := Python (batch inference)
EXTRAS := test,bench
SUPPORTED := 3.10 to 3.13
# Prints "3.12" for a Python the project supports (pyproject.toml's requires-python), else "3.9 (unsupported)".
PY_CHECK := import sys; v = sys.version_info[:2]; print("%d.%d" % v + ("" if (3, 10) <= v <= (3, 13) else " (unsupported)"))

# Which environment: an active conda environment other than base; with USE_ACTIVE_ENV=1 any
# active environment (a virtualenv, or conda's base); with USE_ACTIVE_ENV=0 always .venv.
ifeq ($(USE_ACTIVE_ENV),1)
ENV_DIR := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))
ifeq ($(ENV_DIR),)
$(error USE_ACTIVE_ENV=1, but no environment is active (VIRTUAL_ENV and CONDA_PREFIX are empty))
endif
else ifneq ($(USE_ACTIVE_ENV),0)
ENV_DIR := $(if $(filter-out base,$(CONDA_DEFAULT_ENV)),$(CONDA_PREFIX))
endif

ifdef ENV_DIR
BIN := $(ENV_DIR)/bin
READY := $(ENV_DIR)/.batch-inference-ready
else
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
# .venv is rebuilt when its Python is missing or unsupported, or is not the version of the
# PYTHON given on the command line (make setup PYTHON=python3.12).
VENV_VERSION := $(shell $(BIN)/python -c '$(PY_CHECK)' 2>/dev/null)
WANTED_VERSION := $(if $(filter command line,$(origin PYTHON)),$(shell $(PYTHON) -c '$(PY_CHECK)' 2>/dev/null),$(VENV_VERSION))
REBUILD := $(if $(VENV_VERSION),$(if $(findstring unsupported,$(VENV_VERSION)),yes,$(if $(filter $(WANTED_VERSION),$(VENV_VERSION)),,yes)),yes)
endif

# The Python for a new .venv: PYTHON when given; else python3 when the project supports it; else
# the newest python3.1x on PATH that runs (a pyenv shim for a version it does not serve fails).
FIND_PYTHON := ( for python in $(or $(PYTHON),python3 python3.13 python3.12 python3.11 python3.10); do \
	  case "$$($$python -c '$(PY_CHECK)' 2>/dev/null)" in *unsupported*|"") ;; *) echo $$python; exit 0;; esac; done; \
	echo "No Python $(SUPPORTED) found (tried $(or $(PYTHON),python3 and python3.13 to python3.10)): install one, or name it: make setup PYTHON=/path/to/python3.12" >&2; exit 1 )

# One notebook and papermill overrides, e.g.  make run NB=01 P="num_images=50 batch_size=8"
NB ?=
P ?=
JOB_ARGS := $(if $(NB),--only $(NB)) $(foreach kv,$(P),-p $(firstword $(subst =, ,$(kv))) $(patsubst $(firstword $(subst =, ,$(kv)))=%,%,$(kv)))

.PHONY: setup run smoke job test test-long test-kernel wheel lab lint style clean bench bench-vit bench-feed doctor prefetch lock gpu-wheels gpu-check time-tables FORCE

setup: $(READY)  ## the environment: the exact versions of constraints.txt (a torch already there is kept), and the Jupyter kernel

$(READY): pyproject.toml constraints.txt $(if $(REBUILD),FORCE)
ifdef ENV_DIR
	@version=$$($(BIN)/python -c '$(PY_CHECK)') || exit 1; case "$$version" in *unsupported*) \
	  echo "The active environment $(ENV_DIR) has Python $$version; the project needs $(SUPPORTED). Activate another one, or USE_ACTIVE_ENV=0 to build .venv."; exit 1;; esac
	@echo "Using the active environment $(ENV_DIR) (USE_ACTIVE_ENV=0 builds .venv instead)."
else ifdef REBUILD
	@python=$$( $(FIND_PYTHON)) || exit 1; \
	if [ -d $(VENV) ]; then echo "Rebuilding $(VENV): its Python is $(or $(VENV_VERSION),missing or does not start); $$python is $$($$python -c '$(PY_CHECK)')."; rm -rf $(VENV); fi; \
	echo "Creating $(VENV) with $$python (Python $$($$python -c '$(PY_CHECK)'))."; \
	$$python -m venv $(VENV) && $(BIN)/python -m pip install --quiet --upgrade pip
endif
	@# A torch (and torchvision) already installed within pyproject.toml's ranges is kept: a GPU
	@# image's CUDA build matches its driver. constraints.txt sets every other version.
	$(BIN)/python -m tools.setup_constraints --previous $(READY) $(if $(filter 0,$(KEEP_TORCH)),--no-keep) >$(READY).constraints
	$(BIN)/python -m pip install --quiet -c $(READY).constraints -e ".[$(EXTRAS)]"
	@# jupyter-events asks for jsonschema's optional IRI check, rfc3987-syntax, which builds its
	@# grammar parsers on import: 1.4 s of CPU in every process that imports Ray (each worker
	@# too), for a check nothing here uses. jsonschema works without it.
	$(BIN)/python -m pip uninstall --quiet --yes rfc3987-syntax
	$(BIN)/python -m pip check
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL_DISPLAY_NAME)" >/dev/null
	mv $(READY).constraints $(READY) && touch $(READY)  # which torch: read by the next setup

run: $(READY)  ## every notebook with its default parameters (pretrained weights, real data)
	$(BIN)/python -m tools.run_notebooks $(JOB_ARGS)

smoke: $(READY)  ## every notebook offline: random weights, the sample photos, a few images
	$(BIN)/python -m tools.run_notebooks --smoke $(JOB_ARGS)

job: $(READY)  ## a notebook's job as a script: its parameters and pipeline cells (NB=01; outputs/jobs/)
	$(BIN)/python -m tools.export_job $(or $(NB),01) $(foreach kv,$(P),-p $(firstword $(subst =, ,$(kv))) $(patsubst $(firstword $(subst =, ,$(kv)))=%,%,$(kv)))

test: $(READY)  ## unit tests and every notebook executed offline (under 10 minutes)
	$(BIN)/python -m pytest

test-long: $(READY)  ## the notebooks again in the shapes that take minutes: a 2-node cluster, ten interrupts, a fourth lesson, S3, broken folders (CI runs it)
	$(BIN)/python -m pytest -m long

test-kernel: $(READY)  ## notebook 01 in a new kernel without the project: its first cell installs the wheel (~2 min)
	$(BIN)/python -m pytest -m fresh_kernel tests/system/test_fresh_kernel.py

CHROMIUM ?= /usr/bin/chromium
.PHONY: test-browser
test-browser: $(READY)  ## each notebook run in JupyterLab in headless Chromium; screenshots in outputs/browser
	@test -x $(CHROMIUM) || { echo "Installing Debian's chromium (apt-get)."; \
	  $(if $(filter 0,$(shell id -u)),,sudo) sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium'; }
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install --quiet -c constraints.txt -e ".[browser]"
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest tests/system/browser

doctor:  ## what this machine needs, checked in seconds without network (works before setup too)
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m tools.doctor $(ARGS); \
	else python=$$( $(FIND_PYTHON) 2>/dev/null || echo python3); \
	echo "No environment yet ($(VENV)): checking $$python; 'make setup' creates it."; \
	$$python -m tools.doctor --skip-ray $(ARGS); fi

prefetch: $(READY)  ## download weights and datasets once, for runs without network (ARGS="--num-images 200")
	$(BIN)/python -m tools.prefetch $(ARGS)

time-tables: $(READY)  ## each notebook run offline, then the time table at its top rewritten from the cells' durations
	$(BIN)/python -m tools.time_tables $(ARGS)

lock: $(READY)  ## rewrite constraints.txt with the newest versions that fit; then `make setup test`
	$(BIN)/python -m tools.lock

bench: $(READY)  ## notebook 01's pipeline vs the tutorial, tuned DataLoaders, the model alone: start-up, images/s, crossover
	$(BIN)/python -m benchmarks.bench $(ARGS)

bench-vit: $(READY)  ## notebook 02's two places for the ViT's image processor, timed (ARGS="--num-images 256 --repeat 2")
	$(BIN)/python -m benchmarks.bench --pipelines vit_resize_in_read,vit_processor_in_actor --num-images 128 $(ARGS)

bench-feed: $(READY)  ## each notebook's pipeline against a fake GPU on Ray told this machine's CPUs, local and 50 ms reads, with a CPU account per 1,000 images (ARGS="--notebooks 01 --repeat 3 --paced 150")
	$(BIN)/python -m benchmarks.feed $(ARGS)

gpu-wheels: $(READY)  ## wheels of Ray, papermill and what they need, for a GPU machine without network (wheels/)
	$(BIN)/python -m benchmarks.gpu_check --download-wheels wheels $(ARGS)

GPU_PYTHON ?= python3
gpu-check:  ## on a GPU machine without network, with its own torch: model checks, the notebooks, make bench (outputs/gpu-check)
	$(GPU_PYTHON) -m benchmarks.gpu_check $(if $(wildcard wheels),--wheels wheels) $(ARGS)

wheel:  ## the project's wheel in dist/ (nbhelpers with its data files), for a notebook's first cell elsewhere
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

LAB_ARGS ?=
lab: $(READY)  ## JupyterLab at the project's root: notebooks/ and outputs/ (LAB_ARGS="--port 8890 --no-browser")
	@mkdir -p outputs
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

lint: $(READY)  ## ruff on the package, the tools, the tests and the notebooks
	$(BIN)/ruff check nbhelpers tools tests benchmarks notebooks
	$(BIN)/ruff format --check nbhelpers tools tests benchmarks notebooks

style: $(READY)  ## fix what ruff can fix
	$(BIN)/ruff check --fix nbhelpers tools tests benchmarks notebooks
	$(BIN)/ruff format nbhelpers tools tests benchmarks notebooks

clean:  ## outputs and caches (keeps the environment; `rm -rf .venv` for a fresh start)
	rm -rf outputs .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./.venv/*" -prune -exec rm -rf {} +
