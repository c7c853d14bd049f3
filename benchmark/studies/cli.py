"""``quart-faas bench [NAME [ARGS...]]``: list the studies, run one, or run the default set.

    quart-faas bench                      the list, one line each
    quart-faas bench NAME [ARGS...]       run one; ARGS are its own (NAME --help)
    quart-faas bench --default            what ``make bench`` runs, in order; stops at the
                                          first study that fails, as make would
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from benchmark.studies import BY_NAME, DEFAULT, STUDIES, Study


def listing() -> str:
    width = max(len(s.name) for s in STUDIES)
    lines = [f"{s.name:<{width}}  {s.summary}{'  [default]' if s in DEFAULT else ''}"
             for s in STUDIES]
    return "\n".join(lines + ["", "quart-faas bench NAME --help for a study's options; "
                                  "quart-faas bench --default runs the [default] set"])


def run(study: Study, argv: Sequence[str]) -> int:
    """The study's own ``main``, with its usage line saying how it was called."""
    main = importlib.import_module(study.module).main
    prog, sys.argv[0] = sys.argv[0], f"quart-faas bench {study.name}"
    try:
        return int(main(list(argv)) or 0)
    finally:
        sys.argv[0] = prog


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        print(listing())
        return 0
    if args[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + listing())
        return 0
    if args[0] == "--default":
        if len(args) > 1:
            print("error: --default takes no arguments", file=sys.stderr)
            return 2
        for study in DEFAULT:
            print(f"== quart-faas bench {study.name} {' '.join(study.default_args or ())}",
                  flush=True)
            rc = run(study, study.default_args or ())
            if rc:
                return rc
        return 0
    chosen = BY_NAME.get(args[0].replace("-", "_"))
    if chosen is None:
        print(f"error: no study {args[0]!r}; the studies are:\n{listing()}", file=sys.stderr)
        return 2
    return run(chosen, args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
