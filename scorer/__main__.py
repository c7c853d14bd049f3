"""``python -m scorer``: the scorer process."""
from scorer.cli import main

raise SystemExit(main())
