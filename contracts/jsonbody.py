"""JSON bodies that cannot be pushed into a 500 (issue 18, finding 4).

``parse_json`` checks what ``json.loads`` would push into a 500 or hand on to code that
breaks later: text that is not UTF-8, nesting deeper than a payload ever needs
(``'{"a":' * 50000`` raised RecursionError, an HTML 500), and strings holding a lone
surrogate (``"\\ud800"`` decodes to a str that cannot be encoded again, and a tokenizer
then raised TypeError).  The depth is counted after parsing, without recursion: a pre-scan
of the text for brackets outside strings is quadratic on ``"\\"\\"\\"...``, while the parser
itself stops cleanly at the interpreter's recursion limit.

Here, in the leaf package, so that the plugin, the scorer and the local provider share one
reading.  The stage handler folder keeps its own copy (``functions/stage/jsonbody.py``): it
ships alone into a function image.
"""
from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32  # an AlertManager payload is 4 deep, a FunctionDeployment 3, a scorer request 4


class BadJSON(ValueError):
    """A body refused with a reason the caller answers as a 400."""


def parse_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """A JSON document, or BadJSON saying what is wrong with it (the caller answers 400)."""
    try:
        text = data.decode("utf-8")  # strict: refuses encoded surrogates and stray bytes
    except UnicodeDecodeError as e:
        raise BadJSON(f"body is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        doc = json.loads(text)
    except RecursionError:  # the C scanner stops at the interpreter's recursion limit
        raise BadJSON(f"JSON nested deeper than {max_depth}") from None
    except ValueError as e:
        raise BadJSON(f"malformed JSON: {e}") from None
    depth = nesting_depth(doc, max_depth)
    if depth > max_depth:
        raise BadJSON(f"JSON nested {depth} deep, more than {max_depth}")
    try:  # one pass in C over every string and key
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadJSON(f"a string holds a lone surrogate ({e.object[e.start:e.end]!r}): "
                      "not valid Unicode") from None
    return doc


def nesting_depth(doc: Any, stop_after: int = MAX_DEPTH) -> int:
    """Deepest nesting of lists and objects, walked level by level without recursion;
    stops once past ``stop_after`` (the answer is then ``stop_after + 1``)."""
    depth, level = 0, [doc] if isinstance(doc, (dict, list)) else []
    while level and depth <= stop_after:
        depth += 1
        below: list[Any] = []
        for node in level:
            below += [c for c in (node.values() if isinstance(node, dict) else node)
                      if isinstance(c, (dict, list))]
        level = below
    return depth
