"""File names of a comparison's outputs, shared by ``files.py`` and ``plots.py``.

Its own module so that ``plots`` (which pulls in matplotlib) and ``files``
(which imports ``plots`` only when figures are asked for) need not import
each other.
"""
from __future__ import annotations

import re


def safe_name(part: str) -> str:
    """A name part safe in a file name on every OS (system names may hold ``/`` or spaces)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", part).strip("-.")
    if not cleaned:
        raise ValueError(f"{part!r} has nothing usable in a file name")
    return cleaned
