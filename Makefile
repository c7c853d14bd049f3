# Quart-FaaS: `make demo` and `make test` set up everything they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup system demo test bench clean down

setup: $(STAMP) system

system:
	@bash scripts/setup-system.sh

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e '.[model,bench,test]'
	rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(VENV)/bin/python -m quart_faas.demo $(if $(PIPELINE),--pipeline $(PIPELINE))

test: setup
	$(VENV)/bin/python -m pytest -q

bench: setup
	$(VENV)/bin/quart-faas bench --default

down:
	$(VENV)/bin/quart-faas down

clean: down
	rm -rf .quart build
