"""Modules and functions stay small enough to read in one sitting (issue 16).

Outside tests/, no Python file has more than 400 lines and no function or method more than
60 (``ast``: ``end_lineno - lineno + 1``), unless a one-line reason stands beside it: for a
file, a ``# size: <reason>`` comment in its first 5 lines; for a function, a
``# size: <reason>`` comment on the line just above its ``def`` (or its first decorator).
A reason says why splitting would make the code harder to follow, not that it is long.
"""
from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

from tests.conftest import REPO

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
REASON = re.compile(r"#\s*size:\s*\S")
SKIP_DIRS = {"tests", "build", "results", "node_modules", "__pycache__"}


def sources(root: Path = REPO) -> list[Path]:
    """Our Python files outside tests/ (and outside hidden folders such as .venv)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts[:-1]
        if any(p.startswith(".") or p in SKIP_DIRS for p in parts):
            continue
        out.append(path)
    return out


def oversized(text: str, name: str) -> list[str]:
    """What in one file is over a limit without a reason beside it."""
    lines = text.splitlines()
    out = []
    if len(lines) > MAX_FILE_LINES and not any(REASON.search(ln) for ln in lines[:5]):
        out.append(f"{name}: {len(lines)} lines (> {MAX_FILE_LINES}) and no '# size:' reason "
                   "in its first 5 lines")
    for node in ast.walk(ast.parse(text, name)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        top = min([node.lineno] + [d.lineno for d in node.decorator_list])
        above = lines[top - 2] if top >= 2 else ""
        if not REASON.search(above):
            out.append(f"{name}:{node.lineno} {node.name}: {length} lines "
                       f"(> {MAX_FUNCTION_LINES}) and no '# size:' reason on the line above")
    return out


def test_no_file_or_function_is_over_the_limits_without_a_reason():
    found = []
    for path in sources():
        found += oversized(path.read_text(), path.relative_to(REPO).as_posix())
    assert found == []


def test_the_reasons_are_one_line_each():
    """A reason is a sentence, not a paragraph: the comment holds it on one line."""
    for path in sources():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if REASON.search(line):
                assert len(line.split("size:", 1)[1].strip()) >= 10, f"{path}:{i}: no reason"


def _body(n: int) -> str:
    return "".join(f"    x{i} = {i}\n" for i in range(n - 2)) + "    return 0\n"


def test_the_checker_finds_what_is_over_and_honours_reasons():
    """A table of small sources: the def line counts, so a 60-line function has 59 body lines."""
    fits = "def f():\n" + _body(60)
    long = "def f():\n" + _body(61)
    assert oversized(fits, "a.py") == []
    assert oversized(long, "a.py") == ["a.py:1 f: 61 lines (> 60) and no '# size:' reason "
                                       "on the line above"]
    assert oversized("# size: one table the reader scans\n" + long, "a.py") == []
    decorated = "import functools\n# size: one table\n@functools.cache\n" + long
    assert oversized(decorated, "a.py") == []
    misplaced = "# size: one table\nimport functools\n@functools.cache\n" + long
    assert [m.split(" ")[0] for m in oversized(misplaced, "a.py")] == ["a.py:4"]
    method = "class C:\n" + textwrap.indent(long, "    ")
    assert [m.split(" ")[1] for m in oversized(method, "a.py")] == ["f:"]
    nested = "def outer():\n" + textwrap.indent(long, "    ") + "    return f\n"
    assert {m.split(" ")[1] for m in oversized(nested, "a.py")} == {"outer:", "f:"}
    big = "".join(f"x{i} = {i}\n" for i in range(401))
    assert oversized("".join(f"x{i} = {i}\n" for i in range(400)), "b.py") == []
    assert oversized(big, "b.py") == ["b.py: 401 lines (> 400) and no '# size:' reason in its "
                                      "first 5 lines"]
    assert oversized('"""Doc."""\n# size: generated table, one row a line\n' + big, "b.py") == []
    assert oversized("# size:\n" + big, "b.py") != []  # an empty reason is no reason
