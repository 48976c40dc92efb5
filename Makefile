# lrasr set-up and entry points. `make demo` and `make test` build everything they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := tools
APT_PACKAGES := espeak-ng sox ffmpeg cmake build-essential libboost-program-options-dev \
	libboost-system-dev libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev
export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)

.PHONY: demo test test-slow env system kenlm demo-corpus bench clean

demo: env kenlm demo-corpus
	$(BIN)/lrasr run recipes/demo.yaml

test: env kenlm
	$(BIN)/python -m pytest -q

test-slow: env kenlm
	$(BIN)/python -m pytest -q -m slow

env: system $(VENV)/.installed

# Debian packages: espeak-ng (demo/test speech), ffmpeg (m4a/webm/wma decoding), sox, and what KenLM's
# trainer needs to compile. Installed when missing and we are root; otherwise we say what to run.
system: $(TOOLS)/.system
$(TOOLS)/.system:
	@mkdir -p $(TOOLS)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "Missing system packages:$$missing"; echo "Install them with: sudo apt-get install -y$$missing"; exit 1; fi; \
	fi
	@touch $@

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# KenLM's lmplz and build_binary are not in the Python package: build them from its source package.
kenlm: $(TOOLS)/bin/lmplz
$(TOOLS)/bin/lmplz: | $(VENV)/.installed
	@if command -v lmplz >/dev/null 2>&1 && [ "$$(command -v lmplz)" != "$(CURDIR)/$@" ]; then \
	  mkdir -p $(TOOLS)/bin; ln -sf "$$(command -v lmplz)" $@; ln -sf "$$(command -v build_binary)" $(TOOLS)/bin/build_binary; \
	else bash scripts/build_kenlm.sh $(TOOLS) $(BIN)/pip; fi

demo-corpus: corpora/demo/.stamp
corpora/demo/.stamp: corpora/demo/make_demo.py corpora/demo/sentences_ml.txt | env
	$(BIN)/python corpora/demo/make_demo.py
	@touch $@

bench: env kenlm
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf exp/demo corpora/demo/raw corpora/demo/labeled corpora/demo/text.txt corpora/demo/.stamp
