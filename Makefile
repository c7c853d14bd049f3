# Quart-FaaS: `make demo` and `make test` set up everything they need.
# Python 3.11 first (the project's machines keep the pinned torch's CPU wheel for it), else the
# newest of 3.13 and 3.12 that runs (a pyenv shim of an unselected version does not), else
# python3; scripts/check_python.py then says in one sentence if it cannot do.
# Override: make PYTHON=/path/to/python3.12
PYTHON ?= $(shell for p in python3.11 python3.13 python3.12 python3; do \
                    $$p -c '' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV   := .venv
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup system demo lint test bench clean down

setup: $(STAMP) system

system:
	@bash scripts/setup-system.sh

$(STAMP): requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: no Python found: Quart-FaaS needs python3.11," \
	  "python3.12 or python3.13 on PATH, or make PYTHON=/path/to/python3.11" >&2; exit 1; }
	@$(PYTHON) scripts/check_python.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e '.[model,bench,test]'
	rm -f $(VENV)/.installed-* && touch $@

demo: setup
	$(VENV)/bin/python -m quart_faas.demo $(if $(PIPELINE),--pipeline $(PIPELINE))

# ruff over every file; mypy over the packages (strict where pyproject.toml says, [tool.mypy])
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/python -m pytest -q --durations=25

bench: setup
	$(VENV)/bin/quart-faas bench --default

# Stop what `make demo` / `quart-faas up` started. A checkout without the venv (fresh, or
# before `make setup`) started nothing: there is nothing to stop, and `make clean` still works.
down:
	@if [ -x $(VENV)/bin/quart-faas ]; then $(VENV)/bin/quart-faas down; \
	elif [ -d .quart ]; then echo "make: .quart/ records services but $(VENV) is missing:" \
	  "make setup, then make down" >&2; exit 1; \
	else echo "nothing to stop: no $(VENV) (make setup never ran here)"; fi

clean: down
	rm -rf .quart build
