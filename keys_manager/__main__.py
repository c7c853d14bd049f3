"""``python -m keys_manager``: run the node agent (settings in keys_manager/config.py)."""
from keys_manager.service import main

raise SystemExit(main())
