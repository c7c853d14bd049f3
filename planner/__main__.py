"""``python -m planner``: the static planner CLI (see ``cli``)."""

from planner.cli import main

raise SystemExit(main())
