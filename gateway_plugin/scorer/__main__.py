"""``python -m gateway_plugin.scorer``: the scorer process."""
from gateway_plugin.scorer.cli import main

raise SystemExit(main())
