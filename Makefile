# One obvious way to run each thing. Every target creates (or reuses) the virtual environment .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test protos bench-horizontal bench-paillier

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

## Runs the main job: a local federation on loopback with mTLS.
demo: $(BIN)/.installed
	$(BIN)/fedsuite demo

## Runs the test suite, after installing the system tools some tests need (scripts/test-tools.sh).
test: $(BIN)/.installed
	scripts/test-tools.sh
	$(BIN)/python -m pytest -q

## Regenerates the committed protobuf code from protos/: Python's, and the Ruby client's (Debian's ruby-grpc-tools).
protos: $(BIN)/.installed
	$(BIN)/python scripts/gen_protos.py
	bash scripts/test-tools.d/ruby.sh
	examples/clients/ruby/generate.sh
