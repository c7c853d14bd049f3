"""System names -> factories, and the ``--systems`` parser.

``SYSTEMS[name](bounds, **options)`` builds one system whose ``name`` is
``name``.  Modules are imported on first use: the Quart systems import
torch (seconds), which a run of the baselines alone should not pay.

Shorthands for ``--systems``: ``all`` (every system in ``ALL``),
``baselines`` (the compared products and static provisioning),
``quart-ablations`` (Quart and each of its ablations).
``openfaas-pro-cpu`` is selectable by name only: its load is modelled from
CPU-seconds per request, which not every harness observes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

from .base import Autoscaler, Bounds

__all__ = [
    "ALL",
    "BASELINES",
    "QUART_ABLATIONS",
    "SHORTHANDS",
    "SYSTEMS",
    "build_systems",
    "parse_systems",
]

Factory = Callable[..., Autoscaler]


def _factory(module: str, name: str, **fixed: Any) -> Factory:
    def build(bounds: Bounds, **options: Any) -> Autoscaler:
        if not isinstance(bounds, Bounds):
            raise TypeError(f"{name}: bounds must be a Bounds, got {type(bounds).__name__}")
        clash = sorted(set(options) & ({"name"} | set(fixed)))
        if clash:
            raise TypeError(f"{name}: {', '.join(clash)} is fixed by the system name")
        mod = importlib.import_module(f"{__package__}.{module}")
        try:
            return mod.build(bounds, name=name, **fixed, **options)
        except TypeError as exc:
            raise TypeError(f"{name}: {exc}") from None

    build.__name__ = f"build_{name.replace('-', '_')}"
    build.__doc__ = f"Build {name!r} ({__package__}.{module})."
    return build


QUART_ABLATIONS = ("quart-mmc", "quart-pid", "quart-smooth", "quart", "quart-qna",
                   "quart-nofork")
BASELINES = (
    "openfaas-ce",
    "openfaas-pro-rps",
    "openfaas-pro-capacity",
    "knative-kpa",
    "ray-serve",
    "static",
)

SYSTEMS: dict[str, Factory] = {
    **{n: _factory("quart", n) for n in QUART_ABLATIONS},
    "openfaas-ce": _factory("openfaas_ce", "openfaas-ce"),
    "openfaas-pro-rps": _factory("openfaas_pro", "openfaas-pro-rps", mode="rps"),
    "openfaas-pro-capacity": _factory("openfaas_pro", "openfaas-pro-capacity", mode="capacity"),
    "openfaas-pro-cpu": _factory("openfaas_pro", "openfaas-pro-cpu", mode="cpu"),
    "knative-kpa": _factory("knative_kpa", "knative-kpa"),
    "ray-serve": _factory("ray_serve", "ray-serve"),
    "static": _factory("static", "static"),
}

ALL = QUART_ABLATIONS + BASELINES
SHORTHANDS: dict[str, tuple[str, ...]] = {
    "all": ALL,
    "baselines": BASELINES,
    "quart-ablations": QUART_ABLATIONS,
}


def _names(text: str | Sequence[str]) -> list[str]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    unknown: list[str] = []
    for raw in parts:
        item = raw.strip().lower()
        if not item:
            continue
        expanded = SHORTHANDS.get(item, (item,))
        for name in expanded:
            if name not in SYSTEMS:
                unknown.append(raw.strip())
            elif name not in names:
                names.append(name)
    if unknown:
        raise ValueError(
            f"unknown system(s): {', '.join(unknown)}. Valid systems: {', '.join(SYSTEMS)}; "
            f"shorthands: {', '.join(SHORTHANDS)}"
        )
    if not names:
        raise ValueError(
            f"no systems given. Valid systems: {', '.join(SYSTEMS)}; "
            f"shorthands: {', '.join(SHORTHANDS)}"
        )
    return names


@overload
def parse_systems(
    text: str | Sequence[str],
    bounds: None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]: ...
@overload
def parse_systems(
    text: str | Sequence[str],
    bounds: Bounds,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Autoscaler]: ...
def parse_systems(
    text: str | Sequence[str],
    bounds: Bounds | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str] | list[Autoscaler]:
    """``"quart,openfaas-ce"`` -> names in the order given, shorthands expanded, no repeats.

    With ``bounds`` the systems are built too (``build_systems``), which is
    what a harness wants; without, only the names are checked and returned.
    """
    if bounds is None:
        if options:
            raise ValueError("options need bounds: use build_systems(names, bounds, options)")
        return _names(text)
    return build_systems(text, bounds, options)


def build_systems(
    names: str | Sequence[str],
    bounds: Bounds,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Autoscaler]:
    """Build several systems with one set of bounds; ``options`` are per system name."""
    chosen = _names(names)
    options = dict(options or {})
    stray = sorted(set(options) - set(chosen))
    if stray:
        raise ValueError(f"options given for systems not selected: {', '.join(stray)}")
    return [SYSTEMS[n](bounds, **dict(options.get(n, {}))) for n in chosen]
