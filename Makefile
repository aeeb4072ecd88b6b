# glamor-lightning: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BACKBONE ?= mobilenetv2
DATA ?=
ARGS ?=
CKPT ?=
SYNTH := data/synthcaer
export NO_ALBUMENTATIONS_UPDATE := 1

# The variables a user sets on the command line (`make train BACKBONE=resnet18`), and make's own. Any
# other NAME=value there is refused: make would take it silently, e.g. `backbone=resnet18` (ignored: the
# default backbone trains) or an unquoted Hydra override (`ARGS=logger=csv trainer.max_epochs=1`: the
# second word is a make variable, not an override). Environment variables are never refused.
KNOWN_VARS := ARGS BACKBONE BENCH_ARGS CKPT DATA OUT PYTHON SEEDS SWEEP TABLE VENV
MAKE_VARS := MAKEFLAGS MFLAGS GNUMAKEFLAGS MAKEFILES MAKELEVEL SHELL .SHELLFLAGS
CMDLINE_VARS := $(sort $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $(v))),$(v))))
UNKNOWN_VARS := $(filter-out $(KNOWN_VARS) $(MAKE_VARS),$(CMDLINE_VARS))
# the known variable a name means when only its case differs (`backbone` -> BACKBONE); empty if none
case_of = $(filter $(shell printf '%s' '$(1)' | tr '[:lower:]' '[:upper:]'),$(KNOWN_VARS))
ifneq ($(UNKNOWN_VARS),)
MISCASED := $(foreach v,$(UNKNOWN_VARS),$(if $(call case_of,$(v)),$(v)))
OVERRIDES := $(filter-out $(MISCASED),$(UNKNOWN_VARS))
$(error unknown command-line variable $(strip $(foreach v,$(UNKNOWN_VARS),$(v)=$(value $(v))$(if \
  $(call case_of,$(v)), (did you mean $(call case_of,$(v))=$(value $(v))?),)))$(if $(OVERRIDES),; \
  quote Hydra overrides: ARGS="$(strip $(ARGS) $(foreach v,$(OVERRIDES),$(v)=$(value $(v))))",); \
  known: $(KNOWN_VARS))
endif

.DEFAULT_GOAL := help
.PHONY: help install train eval test test-full lint format synth clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  \033[36m%-11s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the project (again when pyproject.toml changed)

$(SYNTH)/faces.csv: | $(STAMP)
	$(VENV)/bin/glamor prepare synth $(SYNTH)

synth: $(SYNTH)/faces.csv ## make the embedded SynthCAER data under data/ if absent

train: $(STAMP) $(if $(DATA),,$(SYNTH)/faces.csv) ## train BACKBONE=original|mobilenetv2|resnet18 [DATA=root] [ARGS="overrides"], then test the best checkpoint
	$(PY) -m glamor_lightning.train model.backbone=$(BACKBONE) $(if $(DATA),data.root=$(abspath $(DATA))) $(ARGS)

eval: $(STAMP) ## test a checkpoint: make eval CKPT=path [DATA=root] [ARGS=...]
	@test -n "$(CKPT)" || { echo "usage: make eval CKPT=path/to/model.ckpt [DATA=root]"; exit 2; }
	$(PY) -m glamor_lightning.eval ckpt_path=$(abspath $(CKPT)) $(if $(DATA),data.root=$(abspath $(DATA))) $(ARGS)

test: $(STAMP) ## run the tests (not the slow ones)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-full: $(STAMP) ## run every test, slow ones included
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not gpu"

lint: $(STAMP) ## check style and common bugs with ruff (changes nothing; ruff settings in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## rewrite files in place: ruff's safe fixes (imports sorted, ...), then ruff format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove logs and caches (keeps .venv and data)
	rm -rf logs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

# --- paper experiments (docs/experiments.md) ---
SWEEP ?=
TABLE ?= 4
SEEDS ?= 0 1 2
.PHONY: sweep ablation params bench

sweep: $(STAMP) ## create a W&B sweep, print its agent command: make sweep SWEEP=sweeps/table4.yaml (needs `wandb login`)
	@test -n "$(SWEEP)" || { echo "usage: make sweep SWEEP=sweeps/<file>.yaml, one of: $$(echo sweeps/*.yaml)"; exit 2; }
	$(PY) -m glamor_lightning.analysis.sweeps create $(SWEEP)

ablation: $(STAMP) $(if $(DATA),,$(SYNTH)/faces.csv) ## run a paper table locally (Hydra multirun, CSV logs): make ablation TABLE=4|6|7 [DATA=root] [SEEDS="0 1 2"] [ARGS=...] [OUT=results/table<N>.md]
	$(PY) -m glamor_lightning.analysis.ablation run --table $(TABLE) --seeds $(SEEDS) $(if $(DATA),--data $(abspath $(DATA))) $(if $(OUT),--out $(OUT)) $(if $(ARGS),-- $(ARGS))

params: $(STAMP) ## parameter counts per backbone x attention x fusion (markdown)
	$(VENV)/bin/glamor params

bench: $(STAMP) ## measure training/data/detection speed: table + benchmarks/results/latest.json [BENCH_ARGS="--quick|--only data|--device cuda ..."]
	$(PY) -m benchmarks.run $(BENCH_ARGS)
