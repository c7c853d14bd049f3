"""``python -m gateway_plugin``: the plugin process."""
from gateway_plugin.main import main

raise SystemExit(main())
