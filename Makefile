# `make demo` and `make test` create .venv on first use, so a fresh clone needs
# nothing but Python 3.10+ (3.11 preferred) and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# `make demo` prints the progress bar and the table, nothing else.
demo: $(STAMP)
	@$(BIN)/keras-bn demo

lint: $(STAMP)
	$(BIN)/ruff check keras_bn tests export
	$(BIN)/ruff format --check keras_bn tests export

# The suite on TensorFlow, then tests/jax/ on Keras' JAX backend (one backend
# per process: Keras picks it at import; tests/conftest.py selects the folders).
test: lint
	$(BIN)/python -m pytest
	KERAS_BACKEND=jax $(BIN)/python -m pytest tests/jax

bench: $(STAMP)
	$(BIN)/keras-bn bench layer

clean:
	rm -rf $(VENV) export/out .pytest_cache .hypothesis
