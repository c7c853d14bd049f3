"""Every module of ours imports: a module moved or renamed leaves no stale import behind
(the layering test reads imports, but only importing them proves they resolve)."""
from __future__ import annotations

import importlib
import os

import pytest

from tests import layering

# modules that run something when imported, or ship alone into a function image with
# imports resolved there (the template folder, the stage handler's `function` package)
SKIP_PREFIXES = ("template.", "functions.stage.handler")


def _modules() -> list[str]:
    graph = layering.build()
    return sorted(m for m in graph.modules
                  if not m.startswith(SKIP_PREFIXES) and not m.endswith("__main__"))


@pytest.mark.parametrize("module", _modules())
def test_module_imports(module, monkeypatch):
    monkeypatch.setenv("QUART_MODEL_DIR", os.environ.get("QUART_MODEL_DIR", "/nonexistent"))
    importlib.import_module(module)
