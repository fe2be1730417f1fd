# Batch image inference notebooks: `make run` runs them, `make test` tests them.
# Every target creates the virtual environment (.venv) first when it is missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
KERNEL := batch-inference

# One notebook and papermill overrides, e.g.  make run NB=01 P="num_images=50 batch_size=8"
NB ?=
P ?=
JOB_ARGS := $(if $(NB),--only $(NB)) $(foreach kv,$(P),-p $(firstword $(subst =, ,$(kv))) $(patsubst $(firstword $(subst =, ,$(kv)))=%,%,$(kv)))

.PHONY: setup run smoke test lab lint style clean bench bench-vit doctor prefetch

setup: $(READY)

$(READY): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (batch inference)" >/dev/null
	touch $(READY)

run: $(READY)  ## every notebook with its default parameters (pretrained weights, real data)
	$(BIN)/python -m nbhelpers.jobs $(JOB_ARGS)

smoke: $(READY)  ## every notebook offline: random weights, the sample photos, a few images
	$(BIN)/python -m nbhelpers.jobs --smoke $(JOB_ARGS)

test: $(READY)  ## unit tests and every notebook executed offline
	$(BIN)/python -m pytest

CHROMIUM ?= /usr/bin/chromium
.PHONY: test-browser
test-browser: $(READY)  ## each notebook run in JupyterLab in headless Chromium; screenshots in outputs/browser
	@test -x $(CHROMIUM) || { echo "Installing Debian's chromium (apt-get)."; \
	  $(if $(filter 0,$(shell id -u)),,sudo) sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium'; }
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install --quiet $(if $(wildcard constraints.txt),-c constraints.txt) "playwright>=1.45"
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest tests/browser

doctor:  ## what this machine needs, checked in seconds without network (works before setup too)
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m nbhelpers.doctor $(ARGS); \
	else echo "No environment yet (.venv): checking $(PYTHON); 'make setup' creates it."; \
	PYTHONPATH=. $(PYTHON) -m nbhelpers.doctor --skip-ray $(ARGS); fi

prefetch: $(READY)  ## download weights and datasets once, for runs without network (ARGS="--num-images 200")
	$(BIN)/python -m nbhelpers.prefetch $(ARGS)

bench: $(READY)  ## images/s of the notebooks' pipeline vs the tutorial, a DataLoader, the model alone
	$(BIN)/python benchmarks/bench.py $(ARGS)

LAB_ARGS ?=
bench-vit: $(READY)  ## notebook 02's two ways to place the image processor, timed (ARGS="--num-images 64")
	$(BIN)/python benchmarks/vit_variants.py $(ARGS)

lab: $(READY)  ## JupyterLab with the project's kernel (LAB_ARGS="--port 8890 --no-browser")
	$(BIN)/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

lint: $(READY)  ## ruff on the package, the tests and the notebooks
	$(BIN)/ruff check nbhelpers tests benchmarks notebooks
	$(BIN)/ruff format --check nbhelpers tests benchmarks notebooks

style: $(READY)  ## fix what ruff can fix
	$(BIN)/ruff check --fix nbhelpers tests benchmarks notebooks
	$(BIN)/ruff format nbhelpers tests benchmarks notebooks

clean:  ## outputs and caches (keeps .venv; `rm -rf .venv` for a fresh start)
	rm -rf outputs .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
