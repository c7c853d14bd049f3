"""``quart-faas build``: put a stack's images into the local image store.

The local counterpart of ``faas-cli build`` + ``push``: for every function of
the stack it records image -> (handler folder, template folder, working
directory) in ``<state>/images.json``, which the local provider reads when a
deployment names that image (local_provider/images.py).  After it, plain
``faas-cli deploy -f stack.yml`` runs the functions here, unchanged.
"""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from pathlib import Path

from contracts.stack import Stack, StackError, StackFunction, load_stack
from local_provider import images


class BuildError(RuntimeError):
    """The stack cannot be built here; the message names the function and folder."""


def select(stack: Stack, wildcard: str | None = None, regex: str | None = None
           ) -> list[StackFunction]:
    """faas-cli's ``--filter`` (wildcard) and ``--regex`` on function names."""
    fns = list(stack.functions.values())
    if wildcard:
        fns = [f for f in fns if fnmatch.fnmatchcase(f.name, wildcard)]
    if regex:
        try:
            pattern = re.compile(regex)
        except re.error as e:
            raise BuildError(f"--regex {regex!r}: {e}") from None
        fns = [f for f in fns if pattern.search(f.name)]
    if not fns:
        raise BuildError(f"no function of {stack.path.name} matches the filter")
    return fns


def entries(stack: Stack, fns: list[StackFunction]) -> dict[str, dict[str, str]]:
    """image -> index entry; refuses one image built from two different folders."""
    out: dict[str, dict[str, str]] = {}
    for fn in fns:
        handler = stack.root / fn.handler
        template = stack.root / "template" / fn.lang
        if not (handler / "handler.py").is_file():
            raise BuildError(f"{fn.name}: handler folder {handler} has no handler.py")
        if not (template / "index.py").is_file():
            raise BuildError(f"{fn.name}: template/{fn.lang}/index.py not found beside "
                             f"{stack.path.name} (faas-cli template pull?)")
        entry = images.entry_for(handler, template, stack.root, function=fn.name,
                                 stack=str(stack.path), lang=fn.lang)
        key = images.normalise(fn.image)
        prev = out.get(key)
        if prev is not None and any(prev[k] != entry[k] for k in ("handler", "template",
                                                                   "workdir")):
            raise BuildError(f"{fn.name}: image {fn.image} is also built by {prev['function']} "
                             f"from {prev['handler']}; give each handler its own image")
        out.setdefault(key, entry)
    return out


def build(stack_file: str | Path, state_dir: Path, wildcard: str | None = None,
          regex: str | None = None,
          say: Callable[[str], None] = print) -> dict[str, dict[str, str]]:
    try:
        stack = load_stack(stack_file)
    except StackError as e:
        raise BuildError(str(e)) from e
    built = entries(stack, select(stack, wildcard, regex))
    path = images.record(state_dir, built)
    for image, entry in built.items():
        say(f"{image}: {entry['handler']} (template {entry['template']}, "
            f"workdir {entry['workdir']})")
    say(f"recorded {len(built)} image(s) in {path}")
    return built
