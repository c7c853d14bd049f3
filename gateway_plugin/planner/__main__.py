"""``python -m gateway_plugin.planner``: the static planner CLI (see ``cli``)."""

from gateway_plugin.planner.cli import main

raise SystemExit(main())
