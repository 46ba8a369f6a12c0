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
# Envoy's rate limit service (envoy.service.ratelimit.v3) and what it imports, vendored under
# third_party/ with their licences: Python stubs into $$out/{envoy,udpa,xds,validate}/ (top-level
# packages, as protoc's imports name them; the server's distribution ships them from server/),
# and their descriptor set with comments into $$out/envoy.binpb (served by reflection).
VENDORED := third_party/envoy third_party/xds third_party/protoc-gen-validate
VENDORED_PROTOS := $(shell find $(VENDORED) -name '*.proto' | sort)
VENDORED_STUBS := envoy udpa xds validate
ENVOY_GEN := $(BIN)/python -m grpc_tools.protoc $(patsubst %,-I %,$(VENDORED)) --python_out=$$out \
	--grpc_python_out=$$out --pyi_out=$$out --include_source_info \
	--descriptor_set_out=$$out/envoy.binpb $(VENDORED_PROTOS)
ENVOY_CONTRACT := server/patterns_server/envoy.binpb

# What `buf breaking` compares the contract with: the main branch, as committed.
BREAKING_AGAINST ?= .git\#branch=main,subdir=protos

# The oldest redis-py that pyproject.toml allows, and a virtualenv that has it instead of the
# pinned (newest) one.
REDIS_PY_OLDEST := $(shell sed -n 's/.*"redis\[hiredis\]>=\([0-9.]*\),.*/\1/p' pyproject.toml)
OLDEST_VENV := .venv-redis-py-$(REDIS_PY_OLDEST)
# The suites that meet redis-py: storage, the patterns below gRPC (every module of
# tests/patterns/), faults and failover, the services, and Redis over TLS as an ACL user.
REDIS_SUITES := tests/test_storage.py tests/patterns/ tests/test_redis_faults.py tests/test_failover.py \
	tests/test_hardening.py tests/test_ratelimit.py tests/test_counter.py tests/test_events.py \
	tests/test_lock.py tests/test_cache.py tests/test_leaderboard.py tests/test_session.py tests/test_streams.py \
	tests/test_redis_security.py

# pytest on WORKERS processes (pytest-xdist; 0 for one process). Each worker starts its own
# Redis servers and patterns-servers, as its tests first ask for them; a module's tests stay
# on one worker (loadscope), so its module fixtures start once and its files are its own.
WORKERS ?= 2
PYTEST := pytest -n $(WORKERS) --dist loadscope

# Material for MkDocs prints a banner about its successor on every build: not news to act on.
export NO_MKDOCS_2_WARNING := 1

.PHONY: help run test test-redis-py-oldest lint docs protos protos-check plugins bench clean
.DEFAULT_GOAL := help

## help: list these targets
help:
	@awk '/^## [a-z-]+:/ { sub(/^## /, ""); split($$0, part, ": "); \
		printf "  %-13s %s\n", part[1], substr($$0, length(part[1]) + 3) }' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt VERSION
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "patterns-server needs Python 3.11 or newer ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt --config-settings editable_mode=compat \
		-e 'clients/python[web-example]' -e '.[dev,embedded,otel]'
	touch $@

## run: start patterns-server on 127.0.0.1:50051 (embedded Redis unless --redis-url); extra flags via ARGS="..."
run: $(STAMP)
	$(BIN)/patterns-server $(ARGS)

## test: the whole suite against real Redis 7, 6.2, Valkey 8 (standalone and Cluster) and a real server
test: $(STAMP)
	$(BIN)/$(PYTEST) $(ARGS)

## test-redis-py-oldest: the suites that meet redis-py, again with the oldest redis-py the server allows
test-redis-py-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/$(PYTEST) $(REDIS_SUITES) $(ARGS)

$(OLDEST_VENV)/.installed: pyproject.toml clients/python/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/pip install --quiet --upgrade pip
	grep -v '^redis==' constraints.txt > $(OLDEST_VENV)/constraints.txt
	echo 'redis==$(REDIS_PY_OLDEST)' >> $(OLDEST_VENV)/constraints.txt
	$(OLDEST_VENV)/bin/pip install --quiet -c $(OLDEST_VENV)/constraints.txt \
		--config-settings editable_mode=compat -e clients/python -e '.[dev,embedded,otel]'
	touch $@

## lint: buf lint, format and breaking (against main) on the contract; ruff, mypy and the import layers on the Python; the docs site
lint: $(STAMP)
	cd protos && $(BUF) lint && $(BUF) format --diff --exit-code
	$(BUF) breaking protos --against '$(BREAKING_AGAINST)'
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy --python-version 3.10 clients/python/patterns_client  # the client's oldest Python
	$(BIN)/lint-imports  # the layers of docs/architecture.md
	$(BIN)/mkdocs build --strict  # a broken link between pages fails (not with --quiet: it hides them)

## docs: serve the documentation site on http://127.0.0.1:8000, rebuilt as docs/ changes
docs: $(STAMP)
	$(BIN)/mkdocs serve

## protos: regenerate the committed stubs (Python, Go, TypeScript) from protos/
protos: $(STAMP) plugins
	find clients/python/patterns \( -name '*_pb2*.py' -o -name '*_pb2.pyi' \) -delete 2>/dev/null || true
	out=clients/python; $(GEN) && mv $$out/contract.binpb $(CONTRACT)
	cd server && rm -rf $(VENDORED_STUBS)
	out=server; $(ENVOY_GEN) && mv $$out/envoy.binpb $(ENVOY_CONTRACT)
	rm -rf clients/go/patterns/*/ clients/ts/src/gen
	$(BUF) generate --template buf.gen.go.yaml
	$(BUF) generate --template buf.gen.ts.yaml

## protos-check: fail when any committed stubs differ from what protos/ generates (Java's are generated by every build)
# Go's stubs are the sub-folders of clients/go/patterns; the client's own files beside them are not generated.
protos-check: $(STAMP) plugins
	@out=$$(mktemp -d); $(GEN) && \
	diff -r -x '__pycache__' $$out/patterns clients/python/patterns \
		&& cmp $$out/contract.binpb $(CONTRACT) \
		&& mkdir $$out/server && (out=$$out/server; $(ENVOY_GEN)) \
		&& for stubs in $(VENDORED_STUBS); do \
			diff -r -x '__pycache__' $$out/server/$$stubs server/$$stubs || exit 1; done \
		&& cmp $$out/server/envoy.binpb $(ENVOY_CONTRACT) \
		&& $(BUF) generate --template buf.gen.go.yaml -o $$out \
		&& (for d in $$(cd $$out/clients/go/patterns && ls -d */) $$(cd clients/go/patterns && ls -d */); do \
			diff -r $$out/clients/go/patterns/$$d clients/go/patterns/$$d || exit 1; done) \
		&& $(BUF) generate --template buf.gen.ts.yaml -o $$out \
		&& diff -r $$out/clients/ts/src/gen clients/ts/src/gen \
		&& echo "stubs match protos"; \
	rc=$$?; rm -rf $$out; \
	[ $$rc -eq 0 ] || echo "stubs are stale: run 'make protos' and commit"; exit $$rc

# The code generators other than Python's, at the versions their projects pin: protoc-gen-go
# and protoc-gen-go-grpc from clients/go/go.mod's tool lines, ts-proto from
# clients/ts/package-lock.json.
plugins: .tools/protoc-gen-go .tools/protoc-gen-go-grpc clients/ts/node_modules/.bin/protoc-gen-ts_proto
.tools/protoc-gen-go .tools/protoc-gen-go-grpc &: clients/go/go.mod clients/go/go.sum
	cd clients/go && go build -o ../../.tools/ google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc
clients/ts/node_modules/.bin/protoc-gen-ts_proto: clients/ts/package-lock.json
	# --ignore-scripts: ts-proto is all this needs, not the client's build (`prepare`), which a
	# contract change may break until the client follows it.
	cd clients/ts && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

## bench: the load harness; prints RPS and latency percentiles with baselines
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench $(ARGS)

## clean: remove the virtualenv, tool caches and the built docs site
clean:
	rm -rf $(VENV) .venv-redis-py-* site .pytest_cache .mypy_cache .ruff_cache .tools \
		clients/ts/node_modules clients/ts/dist clients/ts/dist-test clients/java/target .import_linter_cache
