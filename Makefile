# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# Both create or reuse the virtual environment in $(VENV) and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.layerscope-installed
# The demo needs the CPU server, scikit-learn, skl2onnx and matplotlib; the tests need the
# CPU server and every extra ('.[dev]'). The plain install is the light client only.
DEMO_STAMP := $(VENV)/.layerscope-demo-installed

.PHONY: demo test lint typecheck bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -e '.[server,sklearn,plot]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/layerscope demo

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy sees the repository through a folder named like the package, whatever the name of
# the checkout's own folder (the repository root is the `layerscope` package).
typecheck: $(STAMP)
	mkdir -p $(VENV)/typecheck && ln -sfn "$(CURDIR)" $(VENV)/typecheck/layerscope
	MYPYPATH=$(VENV)/typecheck $(BIN)/mypy -p layerscope.server.metrics -p layerscope.server.graph \
		-p layerscope.server.runtime -p layerscope.server.analysis -p layerscope.server.store \
		-p layerscope.server.cluster \
		-p layerscope.server.api -p layerscope.client -p layerscope.exporters \
		-m layerscope.protos -p layerscope.protos.codec -p layerscope.protos.options -p layerscope.local \
		-m layerscope.onnx_external -m layerscope.lazy -m layerscope.server.cancellation -m layerscope.server.field_limits \
		-m layerscope.__main__

test: lint typecheck
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/indices.py

clean:
	rm -rf $(VENV) build dist *.egg-info layerscope-demo
